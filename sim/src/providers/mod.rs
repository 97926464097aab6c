//! Provider transports from the OS router to a machine's port 8080: Docker (host-mapped port found
//! through the Engine API), Fly (`https://<app>.fly.dev`, the edge forwards to the machine's 8080)
//! and Daytona (`https://8080-<sandbox>.proxy.daytona.works`).

//!
//! Each provider's handler takes its own context ([`docker::DockerEngine`], [`fly::FlyEdge`],
//! [`daytona::DaytonaProxy`]), built around an [`Endpoint`]: the part of the provider that
//! answers, with its faults.

pub mod daytona;
pub mod docker;
pub mod fly;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::machine::Machine;
use crate::model::{BadCertificate, ProviderFault, ProviderKind};
use crate::net::{
    BoxBody, SimNetwork, TlsPolicy, TlsSession, boxed, is_upgrade, relay_response, text_response,
};
use crate::tls::SimCa;
use crate::trace::{Event, ProviderEvent, TRACE_HEADER, TraceStore};

/// The part of a provider that answers (Docker: the Engine API; Fly: the edge; Daytona: the
/// preview proxy): its address on the sim network, its switched-on faults, the network it
/// forwards on and the trace it records into.
pub struct Endpoint {
    pub kind: ProviderKind,
    addr: SocketAddr,
    net: Arc<SimNetwork>,
    trace: Arc<TraceStore>,
    faults: RwLock<Switched>,
    /// The `provider_certificate` fault: the certificate its HTTPS endpoint presents instead.
    certificate: Arc<RwLock<Option<BadCertificate>>>,
}

#[derive(Default)]
struct Switched {
    status: Option<u16>,
    delay: Option<Duration>,
}

impl Endpoint {
    pub fn new(
        kind: ProviderKind,
        addr: SocketAddr,
        net: Arc<SimNetwork>,
        trace: Arc<TraceStore>,
    ) -> Endpoint {
        Endpoint {
            kind,
            addr,
            net,
            trace,
            faults: RwLock::new(Switched::default()),
            certificate: Arc::new(RwLock::new(None)),
        }
    }

    /// The TLS policy of this provider's HTTPS endpoint: a certificate for `sans` from the sim CA,
    /// unless the `provider_certificate` fault says otherwise.
    pub fn tls_policy(&self, ca: Arc<SimCa>, sans: Vec<String>) -> Arc<dyn TlsPolicy> {
        Arc::new(ProviderTls {
            ca,
            sans,
            bad: self.certificate.clone(),
        })
    }

    /// Switches a fault on (or, `Healthy`, every fault off).
    pub fn apply(&self, fault: ProviderFault) {
        let set = |f: &dyn Fn(&mut Switched)| {
            if let Ok(mut s) = self.faults.write() {
                f(&mut s);
            }
        };
        match fault {
            ProviderFault::Refuses => self.net.set_refused(self.addr, true),
            ProviderFault::Status(code) => set(&|s| s.status = Some(code)),
            ProviderFault::Slow { delay_ms } => {
                set(&|s| s.delay = Some(Duration::from_millis(delay_ms)))
            }
            ProviderFault::Certificate(bad) => {
                if let Ok(mut c) = self.certificate.write() {
                    *c = Some(bad);
                }
            }
            ProviderFault::Healthy => {
                set(&|s| *s = Switched::default());
                self.net.set_refused(self.addr, false);
                if let Ok(mut c) = self.certificate.write() {
                    *c = None;
                }
            }
        }
    }

    /// The `provider_slow` delay, if switched on.
    pub fn delay(&self) -> Option<Duration> {
        self.faults.read().ok()?.delay
    }

    /// The `provider_status` answer, if switched on.
    pub fn status(&self) -> Option<u16> {
        self.faults.read().ok()?.status
    }
}

/// A provider's HTTPS endpoint: one certificate (a wildcard for its domain) for every SNI.
struct ProviderTls {
    ca: Arc<SimCa>,
    sans: Vec<String>,
    bad: Arc<RwLock<Option<BadCertificate>>>,
}

impl TlsPolicy for ProviderTls {
    fn choose(
        &self,
        sni: Option<&str>,
        _peer: SocketAddr,
    ) -> Result<(Arc<rustls::ServerConfig>, TlsSession), String> {
        let bad = self.bad.read().ok().and_then(|b| *b);
        let cfg = self
            .ca
            .server_config(&self.sans, bad)
            .map_err(|e| e.to_string())?;
        Ok((
            cfg,
            TlsSession {
                sni: sni.map(str::to_string),
                certificate: format!(
                    "{}{}",
                    self.sans.join(", "),
                    bad.map(|b| format!(" ({})", b.as_str()))
                        .unwrap_or_default()
                ),
                version: String::new(),
            },
        ))
    }
}

/// The world's machines of one provider by the provider's own key for them (container reference,
/// app name, sandbox id), in world order: the first machine with a key wins it.
pub(crate) fn machines_by_key(
    machines: &[Arc<Machine>],
    kind: ProviderKind,
    key: impl Fn(&Machine) -> Option<String>,
) -> Vec<(String, Arc<Machine>)> {
    machines
        .iter()
        .filter(|m| m.spec.provider == kind)
        .filter_map(|m| Some((key(m)?, m.clone())))
        .collect()
}

/// The first machine with this key.
pub(crate) fn find<'a>(
    machines: &'a [(String, Arc<Machine>)],
    key: &str,
) -> Option<&'a Arc<Machine>> {
    machines.iter().find(|(k, _)| k == key).map(|(_, m)| m)
}

/// Forwards a request that a provider edge accepted to an address on the machine, adding the
/// provider's headers, and records what the provider did.
pub(crate) async fn forward_to_machine(
    endpoint: &Endpoint,
    mut req: Request<Incoming>,
    target: SocketAddr,
    added: Vec<(String, String)>,
    decision: String,
) -> Response<BoxBody> {
    let trace_id = trace_id(&req);
    let request = format!("{} {}", req.method(), describe_url(&req));
    let client_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    for (k, v) in &added {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            parts.headers.insert(k, v);
        }
    }
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    parts.uri = match format!("http://{target}{pq}").parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return text_response(StatusCode::BAD_REQUEST, "bad request target"),
    };
    let provider = endpoint.kind.as_str();
    let result = endpoint
        .net
        .send(Request::from_parts(parts, boxed(body)))
        .await;
    let (resp, status, decision) = match result {
        Ok(resp) => {
            let s = resp.status().as_u16();
            (relay_response(resp, client_upgrade), Some(s), decision)
        }
        Err(e) => {
            let (code, text) = provider_unreachable(provider);
            (
                text_response(code, text),
                Some(code.as_u16()),
                format!("{decision}; machine unreachable ({e}) → {}", code.as_u16()),
            )
        }
    };
    if let Some(id) = trace_id {
        endpoint.trace.record(
            &id,
            Event::Provider(ProviderEvent {
                provider: provider.into(),
                request,
                decision,
                added_headers: added,
                status,
            }),
        );
    }
    resp
}

/// What each provider's edge answers when the machine's port refuses.
fn provider_unreachable(provider: &str) -> (StatusCode, &'static str) {
    match provider {
        // fly-proxy error PC01: "Machine refused connection on port".
        "fly" => (StatusCode::BAD_GATEWAY, ""),
        _ => (StatusCode::BAD_GATEWAY, "bad gateway"),
    }
}

/// The provider's switched-on faults: first a delay, then, if set, a fixed answer that never
/// reaches the machine. `label` names the part of the provider that answers.
pub(crate) async fn provider_faults(
    endpoint: &Endpoint,
    req: &Request<Incoming>,
    label: &str,
    body: &str,
) -> Option<Response<BoxBody>> {
    if let Some(delay) = endpoint.delay() {
        tokio::time::sleep(delay).await;
    }
    let code = endpoint.status()?;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Some(refuse(
        endpoint,
        req,
        format!("{label} fault: answers {code}"),
        text_response(status, body),
    ))
}

/// The request's `Host`, lowercased, without a port.
pub(crate) fn host_of(req: &Request<Incoming>) -> String {
    let h = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    h.split(':').next().unwrap_or("").to_string()
}

pub(crate) fn trace_id(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `https://<host><path>` as the provider saw it.
pub(crate) fn describe_url(req: &Request<Incoming>) -> String {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("https://{host}{pq}")
}

/// Records a provider refusal (no machine reached) and returns the response.
pub(crate) fn refuse(
    endpoint: &Endpoint,
    req: &Request<Incoming>,
    decision: String,
    resp: Response<BoxBody>,
) -> Response<BoxBody> {
    if let Some(id) = trace_id(req) {
        endpoint.trace.record(
            &id,
            Event::Provider(ProviderEvent {
                provider: endpoint.kind.as_str().into(),
                request: format!("{} {}", req.method(), describe_url(req)),
                decision,
                added_headers: vec![],
                status: Some(resp.status().as_u16()),
            }),
        );
    }
    resp
}
