//! Provider transport: `createMachineStub(...).getFetcher(8080)`'s base URL per provider, and the
//! URL the request goes to.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use crate::model::{MachineSpec, ProviderKind, Refusal};
use crate::net::SimNetwork;
use crate::providers::daytona::DAYTONA_PROXY_DOMAIN;
use crate::providers::docker::{EngineEndpoint, host_port_8080};
use crate::providers::fly::{FLY_BASE_DOMAIN, sanitize_app_name};
use crate::trace::{RouterEvent, TraceStore};

/// What the transport reads: the network it sends on, where the Docker client finds the engine,
/// and the trace the Docker client records its Engine API call into.
pub struct Transport {
    pub net: Arc<SimNetwork>,
    pub engine: EngineEndpoint,
    pub trace: Arc<TraceStore>,
}

/// Step: the URL of the request on the machine's 8080 (`getBaseUrl({port: 8080})` + path and
/// query), recorded; a provider error (no host port, engine unreachable) → `502 proxy_error`.
pub async fn machine_url(
    t: &Transport,
    machine: &MachineSpec,
    external_id: &str,
    req: &Request<Incoming>,
    trace_id: Option<&str>,
    ev: &mut RouterEvent,
) -> Result<String, Refusal> {
    let base = base_url(t, machine, external_id, trace_id)
        .await
        .map_err(Refusal::proxy_error)?;
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{base}{pq}");
    ev.provider_url = Some(url.clone());
    Ok(url)
}

/// `getBaseUrl({port: 8080})` per provider.
async fn base_url(
    t: &Transport,
    machine: &MachineSpec,
    external_id: &str,
    trace_id: Option<&str>,
) -> Result<String, String> {
    match machine.provider {
        ProviderKind::Docker => {
            let r = machine.container_ref().unwrap_or(external_id);
            let trace = trace_id.map(|id| (&*t.trace, id));
            let port = host_port_8080(&t.net, &t.engine, r, &machine.id, trace)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("http://127.0.0.1:{port}"))
        }
        ProviderKind::Fly => Ok(format!(
            "https://{}.{FLY_BASE_DOMAIN}",
            sanitize_app_name(external_id)
        )),
        ProviderKind::Daytona => {
            let sandbox = machine.sandbox_id().unwrap_or(external_id);
            Ok(format!("https://8080-{sandbox}.{DAYTONA_PROXY_DOMAIN}"))
        }
    }
}
