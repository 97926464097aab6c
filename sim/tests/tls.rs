//! TLS through the chain on real loopback sockets: the edge's certificate picked by SNI, the
//! handshakes it refuses (an uncovered name, no SNI) as a client sees them, a client that does
//! not trust the world's CA, and the providers' HTTPS endpoints.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use sim::client::{ClientError, Dial};
use sim::trace::{Event, TRACE_HEADER};
use sim::{World, WorldSpec};
use tokio::net::TcpStream;

fn spec(name: &str) -> WorldSpec {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/worlds/{name}.toml"));
    WorldSpec::load(&p).unwrap()
}

/// Sends a GET for `url` over TLS to the edge; the edge hop's `tls` line, or the client's error.
async fn get(w: &World, url: &str) -> (Result<u16, ClientError>, Vec<Event>) {
    let id = w.trace().next_id();
    let dial = Dial {
        addr: w.addrs.edge_tls,
        tls: Some(w.tls_client()),
        announce: Some((w.trace().clone(), id.clone())),
    };
    let h = vec![(TRACE_HEADER.to_string(), id.clone())];
    let got = match sim::client::send_via(&dial, "GET", url, &h, Bytes::new()).await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.into_body().collect().await;
            Ok(status)
        }
        Err(e) => Err(e),
    };
    let events = w
        .trace()
        .wait_finished(&id, std::time::Duration::from_secs(5), |_| true)
        .await;
    (got, events)
}

fn edge(events: &[Event]) -> &sim::trace::EdgeEvent {
    events
        .iter()
        .find_map(|e| match e {
            Event::Edge(e) => Some(e),
            _ => None,
        })
        .expect("an edge hop")
}

#[tokio::test]
async fn the_edge_picks_its_certificate_by_sni() {
    let w = World::start(spec("edge_certificates")).await.unwrap();
    for (url, cert) in [
        (
            "https://misha.iterate.town/",
            "universal iterate.town [iterate.town, *.iterate.town]",
        ),
        (
            "https://4096__misha.iterate.town/",
            "universal iterate.town [iterate.town, *.iterate.town]",
        ),
        (
            "https://4096__mach_123.machines.iterate.town/",
            "total_tls *.machines.iterate.town [*.machines.iterate.town]",
        ),
        (
            "https://3000__mach_01kh7nrrtkfap865vjbmv559ta.jonas2.dev.iterate.com/",
            "advanced jonas2-dev [*.jonas2.dev.iterate.com]",
        ),
    ] {
        let (got, events) = get(&w, url).await;
        assert_eq!(got.unwrap(), 200, "{url}");
        let tls = edge(&events).tls.clone().unwrap_or_default();
        assert!(tls.contains(cert), "{url}: {tls}");
    }
    w.shutdown().await;
}

#[tokio::test]
async fn an_uncovered_name_fails_the_handshake_with_handshake_failure() {
    let w = World::start(spec("edge_certificates")).await.unwrap();
    // One label too many for *.dev.iterate.com; a multi-level name under Universal SSL only.
    for url in [
        "https://misha.jonas.dev.iterate.com/",
        "https://a.b.iterate.app/",
    ] {
        let (got, events) = get(&w, url).await;
        match got {
            Err(ClientError::Tls(e)) => {
                assert!(
                    e.contains("received fatal alert: HandshakeFailure"),
                    "{url}: {e}"
                )
            }
            other => panic!("{url}: expected a refused handshake, got {other:?}"),
        }
        let e = edge(&events);
        assert_eq!(e.method, "TLS");
        assert!(
            e.decision.starts_with("refused: TLS handshake for SNI ")
                && e.decision.ends_with("→ fatal alert handshake_failure"),
            "{}",
            e.decision
        );
        assert!(e.route.is_none() && e.tls.is_none());
    }
    w.shutdown().await;
}

#[tokio::test]
async fn no_sni_is_refused_and_an_untrusted_ca_is_refused_by_the_client() {
    let w = World::start(spec("default")).await.unwrap();
    // An IP address as the server name: rustls sends no SNI.
    let tcp = TcpStream::connect(w.addrs.edge_tls).await.unwrap();
    let err = sim::tls::connect(w.tls_client(), "127.0.0.1", tcp)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("received fatal alert: HandshakeFailure"),
        "{err}"
    );
    // Another world's CA: the client refuses the edge's certificate.
    let other = World::start(spec("default")).await.unwrap();
    let tcp = TcpStream::connect(w.addrs.edge_tls).await.unwrap();
    let err = sim::tls::connect(other.tls_client(), "misha.iterate.town", tcp)
        .await
        .unwrap_err();
    // (Both CAs have the same name: rustls finds the issuer and rejects its signature.)
    assert!(
        err.to_string()
            .contains("invalid peer certificate: BadSignature"),
        "{err}"
    );
    other.shutdown().await;
    w.shutdown().await;
}

#[tokio::test]
async fn providers_serve_https_with_their_own_certificates() {
    let w = World::start(spec("default")).await.unwrap();
    let ca = w.tls_client();
    // Fly's edge: *.fly.dev; any other name does not verify.
    let addr = w.addrs.fly_edge;
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        sim::tls::connect(ca.clone(), "prd-mach-abc123.fly.dev", tcp)
            .await
            .is_ok()
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = sim::tls::connect(ca.clone(), "misha.iterate.town", tcp)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("certificate not valid for name"),
        "{err}"
    );
    // Daytona's preview proxy: *.proxy.daytona.works.
    let tcp = TcpStream::connect(w.addrs.daytona_proxy).await.unwrap();
    assert!(
        sim::tls::connect(
            Arc::clone(&ca),
            "8080-sb-banana-01.proxy.daytona.works",
            tcp
        )
        .await
        .is_ok()
    );
    w.shutdown().await;
}
