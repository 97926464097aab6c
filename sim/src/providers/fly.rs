//! The fake Fly edge: `https://<app>.fly.dev` → the app's one machine, port 8080 (the app's
//! services map 80/443 to internal 8080). One app per machine; the app name is the sanitized
//! external id.
//!
//! Modelled behaviour (documented in README "The simulated world"):
//! - unknown app → `404` (empty body), as the edge has no route for the host;
//! - machine not running (platform state `stopped`/`archived`, no autostart) → `503` (fly-proxy
//!   error PR04, no healthy candidate);
//! - machine's 8080 refuses → `502` (fly-proxy error PC01);
//! - otherwise forwarded with the headers Fly's edge adds: `Fly-Client-IP`, `Fly-Forwarded-Port`,
//!   `Fly-Region`, `Fly-Request-Id`, `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Port`,
//!   `X-Forwarded-Ssl`, `Via`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{
    Endpoint, find, forward_to_machine, host_of, machines_by_key, provider_faults, refuse, trace_id,
};
use crate::machine::Machine;
use crate::model::{MachineState, ProviderKind};
use crate::net::{BoxBody, text_response};
use crate::platform::Platform;

/// `FLY_BASE_DOMAIN`.
pub const FLY_BASE_DOMAIN: &str = "fly.dev";

/// Fly app names: lowercase letters, digits and dashes.
pub fn sanitize_app_name(external_id: &str) -> String {
    external_id
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// What the Fly edge reads: its endpoint, the world's Fly machines by app name, and the
/// platform's records (a machine the platform has stopped is not running).
pub struct FlyEdge {
    pub endpoint: Endpoint,
    platform: Arc<Platform>,
    apps: Vec<(String, Arc<Machine>)>,
}

impl FlyEdge {
    pub fn new(endpoint: Endpoint, platform: Arc<Platform>, machines: &[Arc<Machine>]) -> FlyEdge {
        let apps = machines_by_key(machines, ProviderKind::Fly, |m| {
            m.spec.external_id.as_deref().map(sanitize_app_name)
        });
        FlyEdge {
            endpoint,
            platform,
            apps,
        }
    }
}

pub async fn edge_handle(
    ctx: Arc<FlyEdge>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<BoxBody> {
    let ep = &ctx.endpoint;
    if let Some(resp) = provider_faults(ep, &req, "edge", "").await {
        return resp;
    }
    let host = host_of(&req);
    let app = host
        .strip_suffix(&format!(".{FLY_BASE_DOMAIN}"))
        .unwrap_or("")
        .to_string();
    let Some(machine) = find(&ctx.apps, &app) else {
        return refuse(
            ep,
            &req,
            format!("no app {app:?} on this edge"),
            text_response(StatusCode::NOT_FOUND, ""),
        );
    };
    let mstate = ctx.platform.machine_state(&machine.spec.id);
    if matches!(
        mstate,
        Some(MachineState::Stopped) | Some(MachineState::Archived)
    ) {
        return refuse(
            ep,
            &req,
            format!(
                "app {app}: machine {} is not running (PR04: no healthy candidate)",
                machine.spec.id
            ),
            text_response(StatusCode::SERVICE_UNAVAILABLE, ""),
        );
    }
    let region = machine
        .spec
        .metadata
        .region
        .clone()
        .unwrap_or_else(|| "iad".into());
    let client_ip = peer.ip().to_string();
    let request_id = format!(
        "sim-{}-{region}",
        trace_id(&req).unwrap_or_else(|| "untraced".into())
    );
    let added = vec![
        ("fly-client-ip".to_string(), client_ip.clone()),
        ("fly-forwarded-port".to_string(), "443".to_string()),
        ("fly-region".to_string(), region),
        ("fly-request-id".to_string(), request_id),
        ("x-forwarded-for".to_string(), client_ip),
        ("x-forwarded-proto".to_string(), "https".to_string()),
        ("x-forwarded-port".to_string(), "443".to_string()),
        ("x-forwarded-ssl".to_string(), "on".to_string()),
        ("via".to_string(), "1.1 fly.io".to_string()),
    ];
    let decision = format!("app {app} → machine {} port 8080", machine.spec.id);
    forward_to_machine(ep, req, machine.proxy_addr(), added, decision).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        assert_eq!(sanitize_app_name("Dev_Sandbox.1"), "dev-sandbox-1");
        assert_eq!(sanitize_app_name("prd-mach-1"), "prd-mach-1");
    }
}
