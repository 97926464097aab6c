//! TLS on the sim network: the world's certificate authority, the certificates a TLS server holds
//! (picked by SNI), the edge's certificates as Cloudflare issues them, and the client configuration
//! that trusts the sim CA only.
//!
//! Every world run makes its own CA (rcgen, ECDSA P-256); nothing is trusted system-wide: only the
//! clients built here (the harness's, the browser step's, the OS router's subrequests) and a curl
//! given `--cacert` with the root [`SimCa::root_pem`] trust it.
//!
//! Names are checked as clients check them (RFC 6125 §6.4.3, rustls-webpki): a SAN matches a
//! hostname exactly (ASCII case-insensitive), or it is `*.<rest>` and the hostname is one label
//! followed by `.<rest>`: a wildcard covers exactly one label. An underscore in the label a
//! wildcard covers is accepted (rustls, browsers, curl do; OpenSSL's `X509_check_host` does not),
//! but a public CA never issues a SAN that contains one (CA/Browser Forum ballot SC12), so an
//! advanced certificate or a Total TLS certificate for such a name does not exist. See
//! `docs/behaviour.md` §8.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use crate::model::BadCertificate;

/// Why a certificate or configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The world's certificate authority and the leaf key every certificate it issues carries.
pub struct SimCa {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    ca_der: CertificateDer<'static>,
    leaf_key: KeyPair,
    /// Server configurations by certificate (SANs joined), made once.
    configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for SimCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimCa")
    }
}

impl SimCa {
    /// A fresh CA, valid from 2020 to 2100.
    pub fn new() -> Result<SimCa, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "ingress-sim CA (this world run only)");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let ca_cert = params.self_signed(&ca_key)?;
        let ca_der = ca_cert.der().clone();
        Ok(SimCa {
            ca_cert,
            ca_key,
            ca_der,
            leaf_key: KeyPair::generate()?,
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// The root certificate, PEM (for `curl --cacert`).
    pub fn root_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    fn leaf_params(sans: &[String]) -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        if let Some(first) = sans.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        Ok(params)
    }

    fn certified(&self, cert_der: CertificateDer<'static>) -> Result<CertifiedKey, TlsError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let signing = provider().key_provider.load_private_key(key)?;
        Ok(CertifiedKey::new(
            vec![cert_der, self.ca_der.clone()],
            signing,
        ))
    }

    /// A certificate for `sans` from this CA, or broken as `bad` says.
    pub fn issue(
        &self,
        sans: &[String],
        bad: Option<BadCertificate>,
    ) -> Result<CertifiedKey, TlsError> {
        match bad {
            None => {
                let cert = Self::leaf_params(sans)?.signed_by(
                    &self.leaf_key,
                    &self.ca_cert,
                    &self.ca_key,
                )?;
                self.certified(cert.der().clone())
            }
            Some(BadCertificate::WrongName) => {
                let other = vec!["wrong-name.invalid".to_string()];
                let cert = Self::leaf_params(&other)?.signed_by(
                    &self.leaf_key,
                    &self.ca_cert,
                    &self.ca_key,
                )?;
                self.certified(cert.der().clone())
            }
            Some(BadCertificate::Expired) => {
                let mut params = Self::leaf_params(sans)?;
                params.not_before = rcgen::date_time_ymd(2019, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 1, 1);
                let cert = params.signed_by(&self.leaf_key, &self.ca_cert, &self.ca_key)?;
                self.certified(cert.der().clone())
            }
            Some(BadCertificate::SelfSigned) => {
                let cert = Self::leaf_params(sans)?.self_signed(&self.leaf_key)?;
                let key =
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
                let signing = provider().key_provider.load_private_key(key)?;
                Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
            }
        }
    }

    /// A server configuration presenting one certificate for `sans` (HTTP/1.1 only), made once
    /// per certificate and reused.
    pub fn server_config(
        &self,
        sans: &[String],
        bad: Option<BadCertificate>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let key = format!(
            "{}|{}",
            sans.join(","),
            bad.map(BadCertificate::as_str).unwrap_or("")
        );
        if let Ok(g) = self.configs.lock()
            && let Some(c) = g.get(&key)
        {
            return Ok(c.clone());
        }
        let ck = Arc::new(self.issue(sans, bad)?);
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if let Ok(mut g) = self.configs.lock() {
            g.insert(key, cfg.clone());
        }
        Ok(cfg)
    }

    /// A client configuration that trusts this CA and nothing else (HTTP/1.1).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Whether a certificate's SAN covers `host` as a client checks it: exactly, or a wildcard
/// `*.<rest>` for one label before `.<rest>` (the label may hold `_`; it may not be empty).
pub fn san_covers(san: &str, host: &str) -> bool {
    let san = san.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match san.strip_prefix("*.") {
        Some(rest) => match host.split_once('.') {
            Some((label, host_rest)) => !label.is_empty() && host_rest == rest,
            None => false,
        },
        None => san == host,
    }
}

/// A SAN a public CA will put in a certificate: no `_` (CA/Browser Forum ballot SC12, in force
/// since 2019), a wildcard only as the whole first label.
pub fn issuable(san: &str) -> Result<(), String> {
    if san.contains('_') {
        return Err(format!(
            "{san:?}: a public CA does not issue a name with '_' (CA/Browser Forum ballot SC12)"
        ));
    }
    let rest = san.strip_prefix("*.").unwrap_or(san);
    if rest.contains('*') || rest.is_empty() || !rest.contains('.') {
        return Err(format!(
            "{san:?}: a wildcard is allowed only as the whole first label of a name with at least two more labels"
        ));
    }
    if !rest
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(format!("{san:?}: not a hostname"));
    }
    Ok(())
}

/// Which Cloudflare product an edge certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertSource {
    /// Universal SSL: `<zone>` and `*.<zone>`.
    Universal,
    /// Total TLS: one per proxied hostname (its DNS record).
    TotalTls,
    /// An advanced certificate with its own SAN list.
    Advanced,
    /// The world declares no edge certificates: one for every name in its zones (see
    /// [`EdgeCertificates::any_in_zones`]).
    Assumed,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Universal => "universal",
            CertSource::TotalTls => "total_tls",
            CertSource::Advanced => "advanced",
            CertSource::Assumed => "assumed",
        }
    }
}

/// One certificate the edge holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCert {
    pub source: CertSource,
    /// The zone (universal), the DNS record (Total TLS), or the certificate's name (advanced).
    pub label: String,
    pub sans: Vec<String>,
}

impl EdgeCert {
    /// `universal iterate.town [iterate.town, *.iterate.town]`
    pub fn describe(&self) -> String {
        format!(
            "{} {} [{}]",
            self.source.as_str(),
            self.label,
            self.sans.join(", ")
        )
    }
}

/// The edge's certificates, and how it picks one for an SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCertificates {
    pub certs: Vec<EdgeCert>,
    /// Names a certificate was not issued for, and why (shown by `up`).
    pub not_issued: Vec<String>,
    /// With no certificates declared: every name in these zones is covered.
    pub assumed_zones: Vec<String>,
}

/// What the edge does with a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniChoice {
    /// This certificate, presented for `sans` (an assumed one is issued for the name itself).
    Certificate(EdgeCert),
    /// No certificate covers the name: the handshake fails.
    Refused(String),
}

impl EdgeCertificates {
    /// Certificates as Cloudflare issues them: Universal SSL for each zone (apex + one wildcard
    /// level), Total TLS for each proxied DNS record, and the advanced certificates listed.
    pub fn cloudflare(
        zones: &[String],
        universal: bool,
        total_tls: bool,
        proxied: &[String],
        advanced: &[(String, Vec<String>)],
    ) -> EdgeCertificates {
        let mut certs = Vec::new();
        let mut not_issued = Vec::new();
        if universal {
            for z in zones {
                certs.push(EdgeCert {
                    source: CertSource::Universal,
                    label: z.clone(),
                    sans: vec![z.clone(), format!("*.{z}")],
                });
            }
        }
        if total_tls {
            let universal_certs: Vec<EdgeCert> = certs.clone();
            for r in proxied {
                let probe = r.replace('*', "x");
                if let Some(u) = universal_certs
                    .iter()
                    .find(|c| c.sans.iter().any(|s| san_covers(s, &probe)) && c.sans.contains(r))
                {
                    not_issued.push(format!("total_tls {r:?}: covered by {}", u.describe()));
                    continue;
                }
                match issuable(r) {
                    Ok(()) => certs.push(EdgeCert {
                        source: CertSource::TotalTls,
                        label: r.clone(),
                        sans: vec![r.clone()],
                    }),
                    Err(why) => not_issued.push(format!("total_tls {why}")),
                }
            }
        }
        for (name, sans) in advanced {
            certs.push(EdgeCert {
                source: CertSource::Advanced,
                label: name.clone(),
                sans: sans.clone(),
            });
        }
        EdgeCertificates {
            certs,
            not_issued,
            assumed_zones: vec![],
        }
    }

    /// A world that declares no edge certificates: every name in its zones is assumed covered (a
    /// certificate is issued for the name itself); a name outside them is refused.
    pub fn any_in_zones(zones: &[String]) -> EdgeCertificates {
        EdgeCertificates {
            certs: vec![],
            not_issued: vec![],
            assumed_zones: zones.to_vec(),
        }
    }

    /// Picks the certificate for an SNI: an exact SAN before a wildcard, then advanced and Total
    /// TLS before Universal (Cloudflare serves the most specific certificate, and an advanced
    /// one before a universal one); no SNI, or no certificate covering the name → refused.
    pub fn choose(&self, sni: Option<&str>) -> SniChoice {
        let Some(sni) = sni else {
            return SniChoice::Refused(
                "no SNI in the ClientHello: the edge presents no certificate without one".into(),
            );
        };
        let host = sni.to_ascii_lowercase();
        if !self.assumed_zones.is_empty() || self.certs.is_empty() {
            return match self
                .assumed_zones
                .iter()
                .find(|z| host == **z || host.ends_with(&format!(".{z}")))
            {
                Some(z) => SniChoice::Certificate(EdgeCert {
                    source: CertSource::Assumed,
                    label: z.clone(),
                    sans: vec![assumed_san(&host, z)],
                }),
                None => SniChoice::Refused(format!(
                    "no certificate covers {host} (not in the world's zones: {})",
                    self.assumed_zones.join(", ")
                )),
            };
        }
        let rank = |c: &EdgeCert| {
            let exact = c
                .sans
                .iter()
                .any(|s| !s.starts_with("*.") && san_covers(s, &host));
            let source = match c.source {
                CertSource::Advanced => 0,
                CertSource::TotalTls => 1,
                CertSource::Universal | CertSource::Assumed => 2,
            };
            (if exact { 0 } else { 1 }, source)
        };
        let best = self
            .certs
            .iter()
            .filter(|c| c.sans.iter().any(|s| san_covers(s, &host)))
            .min_by_key(|c| rank(c));
        match best {
            Some(c) => SniChoice::Certificate(c.clone()),
            None => SniChoice::Refused(format!("no certificate covers {host}")),
        }
    }
}

/// The SAN of an assumed certificate for `host` in `zone`: the zone's apex itself, else a
/// wildcard for the name's parent (a name a public CA would issue), else the name.
fn assumed_san(host: &str, zone: &str) -> String {
    if host == zone {
        return host.to_string();
    }
    match host.split_once('.') {
        Some((_, parent)) if issuable(&format!("*.{parent}")).is_ok() => format!("*.{parent}"),
        _ => host.to_string(),
    }
}

/// The registrable zone of a hostname or route host pattern, as this simulator reads it: its last
/// two labels (`*.p.os.iterate.com` → `iterate.com`).
pub fn zone_of(host: &str) -> Option<String> {
    let h = host.trim_start_matches("*.").trim_end_matches('.');
    let labels: Vec<&str> = h.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.contains('*')) {
        return None;
    }
    Some(labels[labels.len() - 2..].join(".").to_ascii_lowercase())
}

/// What a TLS server does with a ClientHello.
pub trait TlsPolicy: Send + Sync {
    /// The configuration to finish the handshake with and what the connection's requests carry
    /// (in their extensions), or why the handshake is refused (then the client gets a fatal
    /// `handshake_failure` alert).
    fn choose(
        &self,
        sni: Option<&str>,
        peer: SocketAddr,
    ) -> Result<(Arc<rustls::ServerConfig>, TlsSession), String>;
}

/// What a request that came over TLS carries in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    pub sni: Option<String>,
    /// The certificate presented, described by the policy.
    pub certificate: String,
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: String,
}

/// Reads a ClientHello from `stream`, asks `policy` for a certificate, and finishes the handshake;
/// a refused one gets [`HANDSHAKE_FAILURE_ALERT`] and the connection is closed (None).
pub async fn accept(
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    policy: &dyn TlsPolicy,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    TlsSession,
)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut acceptor = rustls::server::Acceptor::default();
    let mut buf = vec![0u8; 8192];
    let accepted = loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            acceptor.read_tls(&mut rd).ok()?;
        }
        match acceptor.accept() {
            Ok(Some(a)) => break a,
            Ok(None) => continue,
            Err((_, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = stream.write_all(&out).await;
                return None;
            }
        }
    };
    let sni = accepted.client_hello().server_name().map(str::to_string);
    match policy.choose(sni.as_deref(), peer) {
        Err(_) => {
            let _ = stream.write_all(&HANDSHAKE_FAILURE_ALERT).await;
            let _ = stream.shutdown().await;
            None
        }
        Ok((config, mut session)) => {
            let tls = tokio_rustls::StartHandshake::from_parts(accepted, stream)
                .into_stream(config)
                .await
                .ok()?;
            session.version = tls
                .get_ref()
                .1
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            Some((tls, session))
        }
    }
}

/// Opens TLS over `stream` for `host` (its SNI and the name checked), verifying the server's
/// certificate with `config`.
pub async fn connect<S>(
    config: Arc<ClientConfig>,
    host: &str,
    stream: S,
) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(h.to_string()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a TLS server name: {host:?}"),
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}

/// A failed client handshake in words that do not change from run to run (rustls's own messages
/// carry the verification time).
pub fn describe_handshake_error(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(err) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e.to_string();
    };
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "invalid peer certificate: expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "invalid peer certificate: not valid yet".into()
            }
            C::UnknownIssuer => "invalid peer certificate: unknown issuer".into(),
            C::BadSignature => "invalid peer certificate: bad signature".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "invalid peer certificate: not valid for the name".into()
            }
            other => format!("invalid peer certificate: {other:?}"),
        },
        other => other.to_string(),
    }
}

/// A TLS record carrying a fatal `handshake_failure` alert (what Cloudflare answers a ClientHello
/// for a name it holds no certificate for).
pub const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        assert!(san_covers("*.iterate.town", "misha.iterate.town"));
        assert!(san_covers("*.iterate.town", "4096__misha.iterate.town"));
        assert!(san_covers("*.ITERATE.town", "Misha.iterate.TOWN."));
        assert!(!san_covers("*.iterate.town", "iterate.town"));
        assert!(!san_covers("*.iterate.town", "a.b.iterate.town"));
        assert!(!san_covers(
            "*.iterate.town",
            "4096__mach_123.machines.iterate.town"
        ));
        assert!(san_covers("iterate.town", "iterate.town"));
        assert!(!san_covers("iterate.town", "x.iterate.town"));
    }

    #[test]
    fn public_cas_do_not_issue_underscores() {
        assert!(issuable("*.machines.iterate.town").is_ok());
        assert!(issuable("4096__misha.iterate.town").is_err());
        assert!(issuable("*.*.iterate.town").is_err());
        assert!(issuable("*.com").is_err());
    }

    #[test]
    fn sni_choice_prefers_exact_then_advanced() {
        let certs = EdgeCertificates::cloudflare(
            &s(&["iterate.town", "iterate.com"]),
            true,
            true,
            &s(&[
                "*.dev.iterate.com",
                "os.iterate.com",
                "4096__x.iterate.town",
            ]),
            &[("machines".into(), s(&["*.machines.iterate.town"]))],
        );
        assert_eq!(certs.not_issued.len(), 1, "{:?}", certs.not_issued);
        // Total TLS leaves a record Universal SSL covers to it.
        let both = EdgeCertificates::cloudflare(
            &s(&["iterate.town"]),
            true,
            true,
            &s(&["*.iterate.town"]),
            &[],
        );
        assert_eq!(both.certs.len(), 1);
        let pick = |h: &str| match certs.choose(Some(h)) {
            SniChoice::Certificate(c) => c.describe(),
            SniChoice::Refused(r) => format!("refused: {r}"),
        };
        assert_eq!(
            pick("misha.iterate.town"),
            "universal iterate.town [iterate.town, *.iterate.town]"
        );
        assert_eq!(
            pick("iterate.town"),
            "universal iterate.town [iterate.town, *.iterate.town]"
        );
        // An exact Total TLS certificate beats the universal wildcard.
        assert_eq!(
            pick("os.iterate.com"),
            "total_tls os.iterate.com [os.iterate.com]"
        );
        assert_eq!(
            pick("jonas.dev.iterate.com"),
            "total_tls *.dev.iterate.com [*.dev.iterate.com]"
        );
        assert_eq!(
            pick("4096__mach_123.machines.iterate.town"),
            "advanced machines [*.machines.iterate.town]"
        );
        assert_eq!(
            pick("misha.jonas.dev.iterate.com"),
            "refused: no certificate covers misha.jonas.dev.iterate.com"
        );
        assert!(matches!(certs.choose(None), SniChoice::Refused(_)));
    }

    #[test]
    fn undeclared_certificates_cover_the_zones() {
        let certs = EdgeCertificates::any_in_zones(&s(&["iterate.town"]));
        assert!(matches!(
            certs.choose(Some("a.b.iterate.town")),
            SniChoice::Certificate(_)
        ));
        assert!(matches!(
            certs.choose(Some("google.com")),
            SniChoice::Refused(_)
        ));
    }

    #[test]
    fn zones() {
        assert_eq!(
            zone_of("*.p.os.iterate.com").as_deref(),
            Some("iterate.com")
        );
        assert_eq!(zone_of("iterate.town").as_deref(), Some("iterate.town"));
        assert_eq!(zone_of("localhost"), None);
    }
}
