//! The fake Daytona preview proxy: `https://<port>-<sandboxId>.proxy.daytona.works`.
//!
//! Modelled behaviour (documented in README "The simulated world"):
//! - unknown sandbox → `404`;
//! - a private sandbox (`public = false`) needs `X-Daytona-Preview-Token` equal to its token, else
//!   `401`; public sandboxes pass without a token (ingress relies on `public: true`);
//! - a sandbox whose machine is `stopped`/`archived` is not running → `503`;
//! - port 8080 reaches the machine proxy; any other port reaches that app directly (a preview URL
//!   exists for every port), so `3000-<id>` bypasses the machine proxy, as in production;
//! - forwarded with `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{
    Endpoint, find, forward_to_machine, host_of, machines_by_key, provider_faults, refuse,
};
use crate::machine::{MACHINE_INGRESS_PORT, Machine};
use crate::model::{MachineState, ProviderKind};
use crate::net::{BoxBody, text_response};
use crate::platform::Platform;

pub const DAYTONA_PROXY_DOMAIN: &str = "proxy.daytona.works";
pub const PREVIEW_TOKEN_HEADER: &str = "x-daytona-preview-token";

/// `<port>-<sandboxId>.proxy.daytona.works` → (port, sandbox id).
pub fn parse_preview_host(host: &str) -> Option<(u16, String)> {
    let sub = host.strip_suffix(&format!(".{DAYTONA_PROXY_DOMAIN}"))?;
    let (port, id) = sub.split_once('-')?;
    let port = proxy::target_host::parse_port(port)?;
    (!id.is_empty() && !id.contains('.')).then(|| (port, id.to_string()))
}

/// What the preview proxy reads: its endpoint, the world's Daytona machines by sandbox id, and
/// the platform's records (a machine the platform has stopped is not running).
pub struct DaytonaProxy {
    pub endpoint: Endpoint,
    platform: Arc<Platform>,
    sandboxes: Vec<(String, Arc<Machine>)>,
}

impl DaytonaProxy {
    pub fn new(
        endpoint: Endpoint,
        platform: Arc<Platform>,
        machines: &[Arc<Machine>],
    ) -> DaytonaProxy {
        let sandboxes = machines_by_key(machines, ProviderKind::Daytona, |m| {
            m.spec.sandbox_id().map(str::to_string)
        });
        DaytonaProxy {
            endpoint,
            platform,
            sandboxes,
        }
    }
}

pub async fn proxy_handle(
    ctx: Arc<DaytonaProxy>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<BoxBody> {
    let ep = &ctx.endpoint;
    let fault = provider_faults(ep, &req, "preview proxy", "simulated preview proxy failure");
    if let Some(resp) = fault.await {
        return resp;
    }
    let host = host_of(&req);
    let Some((port, sandbox)) = parse_preview_host(&host) else {
        return refuse(
            ep,
            &req,
            format!("not a preview host: {host:?}"),
            text_response(StatusCode::NOT_FOUND, "not found"),
        );
    };
    let Some(machine) = find(&ctx.sandboxes, &sandbox) else {
        return refuse(
            ep,
            &req,
            format!("no sandbox {sandbox:?}"),
            text_response(StatusCode::NOT_FOUND, "sandbox not found"),
        );
    };
    let meta = &machine.spec.metadata;
    if !meta.public {
        let presented = req
            .headers()
            .get(PREVIEW_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        let ok = matches!((presented, meta.preview_token.as_deref()), (Some(p), Some(t)) if p == t);
        if !ok {
            return refuse(
                ep,
                &req,
                format!(
                    "sandbox {sandbox} is private: {} preview token",
                    if presented.is_some() { "wrong" } else { "no" }
                ),
                text_response(StatusCode::UNAUTHORIZED, "unauthorized"),
            );
        }
    }
    if matches!(
        ctx.platform.machine_state(&machine.spec.id),
        Some(MachineState::Stopped) | Some(MachineState::Archived)
    ) {
        return refuse(
            ep,
            &req,
            format!("sandbox {sandbox} is not running"),
            text_response(StatusCode::SERVICE_UNAVAILABLE, "sandbox is not running"),
        );
    }
    let (target, what) = if port == MACHINE_INGRESS_PORT {
        (machine.proxy_addr(), "machine proxy".to_string())
    } else {
        match machine.app(port) {
            Some(app) => (
                app.addr,
                format!("app on {port} (bypassing the machine proxy)"),
            ),
            None => {
                return refuse(
                    ep,
                    &req,
                    format!("sandbox {sandbox}: nothing listens on {port}"),
                    text_response(StatusCode::BAD_GATEWAY, "bad gateway"),
                );
            }
        }
    };
    let client_ip = peer.ip().to_string();
    let added = vec![
        ("x-forwarded-for".to_string(), client_ip),
        ("x-forwarded-proto".to_string(), "https".to_string()),
        ("x-forwarded-host".to_string(), host.clone()),
    ];
    let decision = format!(
        "sandbox {sandbox} ({}) port {port} → {what}",
        machine.spec.id
    );
    forward_to_machine(ep, req, target, added, decision).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_hosts() {
        assert_eq!(
            parse_preview_host("8080-sb-1.proxy.daytona.works"),
            Some((8080, "sb-1".into()))
        );
        assert_eq!(parse_preview_host("x-sb.proxy.daytona.works"), None);
        assert_eq!(parse_preview_host("8080-.proxy.daytona.works"), None);
        assert_eq!(parse_preview_host("8080-sb.example.com"), None);
    }
}
