//! Docker: the fake Engine API, and the provider client the OS router uses to find the host port
//! published for container port 8080 (`GET /containers/{ref}/json` →
//! `NetworkSettings.Ports["8080/tcp"][0].HostPort`). The client speaks to a TCP endpoint (the fake
//! engine, through the sim network) or to a Unix socket (a real engine).

use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::net::{BoxBody, SimNetwork, full, json_response};
use crate::runtime::WorldState;
use crate::trace::{Event, ProviderEvent, TRACE_HEADER};
use crate::world::ProviderKind;

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

/// The Docker provider client: container port 8080 → `http://127.0.0.1:<hostPort>`.
pub async fn host_port_8080(
    net: &SimNetwork,
    engine: &EngineEndpoint,
    container_ref: &str,
    trace_id: Option<&str>,
) -> Result<u16, DockerError> {
    let path = format!("/containers/{}/json", percent_encode_path(container_ref));
    let mut req = Request::get(&path);
    if let Some(id) = trace_id {
        req = req.header(TRACE_HEADER, id);
    }
    let (status, body) = match engine {
        EngineEndpoint::Sim => {
            let uri: Uri = format!("http://{ENGINE_HOST}{path}").parse().map_err(|_| {
                DockerError::Unreachable(format!("bad container ref {container_ref:?}"))
            })?;
            let mut r = req
                .uri(uri)
                .body(full(""))
                .map_err(|e| DockerError::Unreachable(e.to_string()))?;
            r.headers_mut()
                .insert(http::header::HOST, http::HeaderValue::from_static("docker"));
            let resp = net
                .send(r)
                .await
                .map_err(|e| DockerError::Unreachable(e.to_string()))?;
            read(resp).await?
        }
        EngineEndpoint::Unix(sock) => {
            let stream = tokio::net::UnixStream::connect(sock)
                .await
                .map_err(|e| DockerError::Unreachable(format!("{}: {e}", sock.display())))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| DockerError::Unreachable(e.to_string()))?;
            tokio::spawn(conn);
            let r = req
                .header(http::header::HOST, "docker")
                .body(full(""))
                .map_err(|e| DockerError::Unreachable(e.to_string()))?;
            let resp = sender
                .send_request(r)
                .await
                .map_err(|e| DockerError::Unreachable(e.to_string()))?;
            read(resp).await?
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    match status {
        200 => {}
        404 => return Err(DockerError::NoSuchContainer(container_ref.to_string())),
        s => {
            let msg = v["message"].as_str().unwrap_or("").to_string();
            return Err(DockerError::Api(s, msg));
        }
    }
    v["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        .as_str()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or(DockerError::NoHostPort)
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

fn percent_encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The fake Engine API: `GET [/v1.xx]/containers/{ref}/json`.
pub async fn engine_handle(
    state: Arc<WorldState>,
    req: Request<Incoming>,
) -> http::Response<BoxBody> {
    let trace_id = req
        .headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = req.uri().path().to_string();
    let request = format!("{} {}", req.method(), path);
    let record = |decision: String, status: u16| {
        if let Some(id) = &trace_id {
            state.trace.record(
                id,
                Event::Provider(ProviderEvent {
                    provider: "docker".into(),
                    request: request.clone(),
                    decision,
                    added_headers: vec![],
                    status: Some(status),
                }),
            );
        }
    };
    if let Some(delay) = state.provider_delay(ProviderKind::Docker) {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = state.provider_status(ProviderKind::Docker) {
        record(format!("engine fault: answers {code}"), code);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_response(status, &json!({"message": "simulated engine failure"}));
    }
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
        record("unsupported endpoint".into(), 404);
        return json_response(StatusCode::NOT_FOUND, &json!({"message": "page not found"}));
    };
    let Some(machine) = state.docker_machine_by_ref(&container) else {
        record(format!("no such container {container:?}"), 404);
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": format!("No such container: {container}")}),
        );
    };
    let mapped = machine.spec.metadata.publish_8080 && !state.docker_unmapped(&machine.spec.id);
    let host_port = machine.proxy_addr.port();
    let ports = if mapped {
        json!({"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": host_port.to_string()}]})
    } else {
        json!({})
    };
    record(
        if mapped {
            format!(
                "container {container} ({}): 8080/tcp → 0.0.0.0:{host_port}",
                machine.spec.id
            )
        } else {
            format!(
                "container {container} ({}): no host port for 8080/tcp",
                machine.spec.id
            )
        },
        200,
    );
    json_response(
        StatusCode::OK,
        &json!({
            "Id": format!("sim-{}", machine.spec.id),
            "Name": format!("/{container}"),
            "State": {"Status": "running", "Running": true, "Paused": false},
            "Config": {"ExposedPorts": {"8080/tcp": {}}},
            "NetworkSettings": {"Ports": ports},
        }),
    )
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
            assert_eq!(percent_decode(&percent_encode_path(s)), s);
        }
    }
}
