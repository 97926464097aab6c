//! Docker: the fake Engine API, and the provider client the OS router uses to find the host port
//! published for container port 8080 (`GET /containers/{ref}/json` →
//! `NetworkSettings.Ports["8080/tcp"][0].HostPort`). The client speaks to a TCP endpoint (the fake
//! engine, through the sim network) or to a Unix socket (a real engine).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use http::{Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::{Endpoint, find, machines_by_key};
use crate::machine::Machine;
use crate::model::{ContainerState, EngineFault, ProviderKind};
use crate::net::{BoxBody, SimNetwork, full, json_response};
use crate::trace::{Event, ProviderEvent, TRACE_HEADER, TraceStore};

/// The sim network name of the fake engine.
pub const ENGINE_HOST: &str = "docker-engine.sim";

/// Where the Engine API is.
#[derive(Debug, Clone)]
pub enum EngineEndpoint {
    /// `http://<host>` resolved through the sim network.
    Sim,
    /// A Unix socket, e.g. `/var/run/docker.sock`.
    Unix(PathBuf),
}

/// Why no base URL could be built for a Docker machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    #[error("No host port mapped for 8080")]
    NoHostPort,
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("Docker API {0}: {1}")]
    Api(u16, String),
    #[error("Docker API unreachable: {0}")]
    Unreachable(String),
}

/// One Engine API call over a Unix socket (a real engine): status and body.
pub async fn engine_call(
    socket: &std::path::Path,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, bytes::Bytes), DockerError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| DockerError::Unreachable(format!("{}: {e}", socket.display())))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| DockerError::Unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "docker");
    let body = match body {
        Some(v) => {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
            full(v.to_string())
        }
        None => full(""),
    };
    let r = req
        .body(body)
        .map_err(|e| DockerError::Unreachable(e.to_string()))?;
    let resp = sender
        .send_request(r)
        .await
        .map_err(|e| DockerError::Unreachable(e.to_string()))?;
    read(resp).await
}

/// The Docker provider client: container port 8080 → `http://127.0.0.1:<hostPort>`. It records
/// what it asked and what it concluded as the `provider` hop (the same for the fake engine and a
/// real one).
pub async fn host_port_8080(
    net: &SimNetwork,
    engine: &EngineEndpoint,
    container_ref: &str,
    machine_id: &str,
    trace: Option<(&TraceStore, &str)>,
) -> Result<u16, DockerError> {
    let path = format!("/containers/{}/json", percent_encode(container_ref));
    let answer = inspect(net, engine, &path, trace.map(|t| t.1)).await;
    let (status, decision, result) = match answer {
        Err(e) => (None, e.to_string(), Err(e)),
        Ok((status, body)) => {
            let v: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            match status {
                200 => {
                    let binding = &v["NetworkSettings"]["Ports"]["8080/tcp"][0];
                    let port = binding["HostPort"]
                        .as_str()
                        .and_then(|p| p.parse::<u16>().ok())
                        .filter(|p| *p != 0);
                    match port {
                        Some(p) => (
                            Some(200),
                            format!(
                                "container {container_ref} ({machine_id}): 8080/tcp → {}:{p}",
                                binding["HostIp"].as_str().unwrap_or("")
                            ),
                            Ok(p),
                        ),
                        None => (
                            Some(200),
                            format!(
                                "container {container_ref} ({machine_id}): no host port for 8080/tcp"
                            ),
                            Err(DockerError::NoHostPort),
                        ),
                    }
                }
                404 => (
                    Some(404),
                    format!("no such container {container_ref:?}"),
                    Err(DockerError::NoSuchContainer(container_ref.to_string())),
                ),
                s => {
                    let msg = v["message"].as_str().unwrap_or("").to_string();
                    (
                        Some(s),
                        format!("engine answers {s}: {msg}"),
                        Err(DockerError::Api(s, msg)),
                    )
                }
            }
        }
    };
    if let Some((store, id)) = trace {
        store.record(
            id,
            Event::Provider(ProviderEvent {
                provider: "docker".into(),
                request: format!("GET {path}"),
                decision,
                added_headers: vec![],
                status,
            }),
        );
    }
    result
}

/// `GET <path>` on the engine: status and body.
async fn inspect(
    net: &SimNetwork,
    engine: &EngineEndpoint,
    path: &str,
    trace_id: Option<&str>,
) -> Result<(u16, bytes::Bytes), DockerError> {
    match engine {
        EngineEndpoint::Sim => {
            let uri: Uri = format!("http://{ENGINE_HOST}{path}")
                .parse()
                .map_err(|_| DockerError::Unreachable(format!("bad path {path:?}")))?;
            let mut req = Request::get(uri);
            if let Some(id) = trace_id {
                req = req.header(TRACE_HEADER, id);
            }
            let mut r = req
                .body(full(""))
                .map_err(|e| DockerError::Unreachable(e.to_string()))?;
            r.headers_mut()
                .insert(http::header::HOST, http::HeaderValue::from_static("docker"));
            // The OS worker's fetch (workerd) words a refused connection its own way.
            let resp = net
                .send(r)
                .await
                .map_err(|e| DockerError::Unreachable(e.workerd_message()))?;
            read(resp).await
        }
        EngineEndpoint::Unix(sock) => engine_call(sock, http::Method::GET, path, None).await,
    }
}

async fn read(resp: http::Response<Incoming>) -> Result<(u16, bytes::Bytes), DockerError> {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| DockerError::Unreachable(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

/// Percent-encodes everything but RFC 3986's unreserved characters: safe in an Engine API path
/// segment or query value.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real engine behind the engine's sim address (the docker backend): requests are passed to the
/// Unix socket with the world's container names mapped to the real, per-run unique ones.
#[derive(Debug, Clone)]
pub struct EngineRelay {
    pub socket: PathBuf,
    /// Container reference as the world names it → the real container's name.
    pub names: std::collections::HashMap<String, String>,
}

/// What the engine reads: its endpoint, the world's Docker machines by container reference, the
/// containers whose 8080 has no host port (`docker_no_port_mapping`), and the real engine it
/// relays to, if any.
pub struct DockerEngine {
    pub endpoint: Endpoint,
    containers: Vec<(String, Arc<Machine>)>,
    unmapped: RwLock<HashSet<String>>,
    relay: Option<EngineRelay>,
}

impl DockerEngine {
    pub fn new(
        endpoint: Endpoint,
        machines: &[Arc<Machine>],
        relay: Option<EngineRelay>,
    ) -> DockerEngine {
        let containers = machines_by_key(machines, ProviderKind::Docker, |m| {
            m.spec.container_ref().map(str::to_string)
        });
        DockerEngine {
            endpoint,
            containers,
            unmapped: RwLock::new(HashSet::new()),
            relay,
        }
    }

    /// A fault about one machine's container.
    pub fn apply(&self, machine: &str, fault: EngineFault) {
        match fault {
            EngineFault::NoPortMapping => {
                if let Ok(mut u) = self.unmapped.write() {
                    u.insert(machine.to_string());
                }
            }
        }
    }

    fn unmapped(&self, machine: &str) -> bool {
        self.unmapped
            .read()
            .map(|u| u.contains(machine))
            .unwrap_or(false)
    }
}

/// The engine at [`ENGINE_HOST`]: `GET [/v1.xx]/containers/{ref}/json`, answered by the fake
/// engine from the world, or relayed to a real engine. Docker provider faults apply to both.
pub async fn engine_handle(
    ctx: Arc<DockerEngine>,
    req: Request<Incoming>,
) -> http::Response<BoxBody> {
    if let Some(delay) = ctx.endpoint.delay() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = ctx.endpoint.status() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_response(status, &json!({"message": "simulated engine failure"}));
    }
    let path = req.uri().path().to_string();
    // Strip an optional API version prefix.
    let p = path
        .strip_prefix("/v")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(&path);
    let container = p
        .strip_prefix("/containers/")
        .and_then(|r| r.strip_suffix("/json"))
        .map(percent_decode);
    let Some(container) = container.filter(|_| req.method() == http::Method::GET) else {
        return json_response(StatusCode::NOT_FOUND, &json!({"message": "page not found"}));
    };
    let machine = find(&ctx.containers, &container);
    let unmapped =
        machine.is_some_and(|m| !m.spec.metadata.publish_8080 || ctx.unmapped(&m.spec.id));
    let mut v = match &ctx.relay {
        Some(relay) => match relay_inspect(relay, &container).await {
            Ok(Some(v)) => v,
            Ok(None) => return no_such_container(&container),
            Err(e) => {
                return json_response(
                    StatusCode::BAD_GATEWAY,
                    &json!({"message": format!("relay to the real engine failed: {e}")}),
                );
            }
        },
        None => match machine {
            Some(m) => fake_inspect(m, &container),
            None => return no_such_container(&container),
        },
    };
    if unmapped {
        v["NetworkSettings"]["Ports"] = json!({});
    }
    json_response(StatusCode::OK, &v)
}

fn no_such_container(container: &str) -> http::Response<BoxBody> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"message": format!("No such container: {container}")}),
    )
}

/// What a real engine answers for a container in the machine's container state.
fn fake_inspect(machine: &Machine, container: &str) -> serde_json::Value {
    let c = machine.container_state();
    let ports = match machine.host_addr().filter(|_| c.port_published()) {
        Some(a) => json!({"8080/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": a.port().to_string()},
            {"HostIp": "::", "HostPort": a.port().to_string()},
        ]}),
        // The image exposes 8080; without a binding the engine lists it with no host port.
        None => json!({"8080/tcp": null}),
    };
    json!({
        "Id": format!("sim-{}", machine.spec.id),
        "Name": format!("/{container}"),
        "State": {"Status": c.status(), "Running": c.running(), "Paused": c == ContainerState::Paused},
        "Config": {"ExposedPorts": {"8080/tcp": {}}},
        "NetworkSettings": {"Ports": ports},
    })
}

/// Inspects the real container behind a world's container reference; `None` when there is none.
async fn relay_inspect(
    relay: &EngineRelay,
    container: &str,
) -> Result<Option<serde_json::Value>, DockerError> {
    let Some(real) = relay.names.get(container) else {
        return Ok(None);
    };
    let path = format!("/containers/{}/json", percent_encode(real));
    let (status, body) = engine_call(&relay.socket, http::Method::GET, &path, None).await?;
    match status {
        200 => {
            let mut v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| DockerError::Unreachable(format!("engine JSON: {e}")))?;
            v["Name"] = json!(format!("/{container}"));
            Ok(Some(v))
        }
        404 => Ok(None),
        s => Err(DockerError::Api(
            s,
            String::from_utf8_lossy(&body).into_owned(),
        )),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_encoding_roundtrip() {
        for s in ["c1", "my container/x", "a%b"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
    }
}
