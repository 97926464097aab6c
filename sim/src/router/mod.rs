//! The OS router (the `os` worker's ingress path), by generation (docs/behaviour.md §3). The world's
//! `router` field picks the generation; each is a file that reads as its spec's step list
//! ([`v0`]), built from the shared [`step`]s. [`handle`] runs it, renders its [`Outcome`] once
//! (a refusal in the generation's error envelope) and records the router's trace event.

pub mod step;
pub mod v0;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::model::{Code, Envelope, Generation, Refusal};
use crate::net::{BoxBody, full, json_response};
use crate::platform::Platform;
use crate::trace::{Event, RouterEvent, TRACE_HEADER, TraceStore};
use step::matchers::HostGlob;
use step::transport::Transport;

/// What the router reads: its generation, the host matchers, the platform's records, the
/// provider transport, and the trace.
pub struct RouterCtx {
    pub generation: Generation,
    /// `PROJECT_INGRESS_PROXY_HOST_MATCHERS`, parsed.
    pub matchers: Vec<HostGlob>,
    pub platform: Arc<Platform>,
    pub transport: Transport,
    pub trace: Arc<TraceStore>,
}

/// What a generation decided.
pub enum Outcome {
    /// Forwarded to the machine: its answer, relayed.
    Forward(Response<BoxBody>),
    /// The router answers itself.
    Respond(Answer),
    /// Not the router's request: the worker's next handler takes it (V2+: login and auth paths,
    /// `/_/exchange-token`). Until the control plane is modelled it is answered `404 not_found`.
    FallThrough,
}

/// An answer of the router's own.
pub enum Answer {
    Refusal(Refusal),
    /// V2+: to the canonical host (301) or the auth bridge (302).
    Redirect {
        status: StatusCode,
        location: String,
    },
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Outcome {
        Outcome::Respond(Answer::Refusal(r))
    }
}

/// The error body's shape in a generation.
fn envelope(g: Generation) -> Envelope {
    match g {
        Generation::V0 => Envelope::Code,
    }
}

pub async fn handle(
    ctx: Arc<RouterCtx>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<BoxBody> {
    let trace_id = req
        .headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut ev = RouterEvent::new(ctx.generation.as_str());
    let tid = trace_id.as_deref();
    let decided = match ctx.generation {
        Generation::V0 => v0::route(&ctx, req, &mut ev, tid).await,
    };
    let outcome = decided.unwrap_or_else(Outcome::from);
    let resp = render(outcome, envelope(ctx.generation), &mut ev);
    if let Some(id) = trace_id {
        ctx.trace.record(&id, Event::Router(Box::new(ev)));
    }
    resp
}

/// The one place an outcome becomes a response (and the event's outcome and status).
fn render(outcome: Outcome, envelope: Envelope, ev: &mut RouterEvent) -> Response<BoxBody> {
    let resp = match outcome {
        Outcome::Forward(resp) => {
            ev.outcome = if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                "tunnel".into()
            } else {
                "forwarded".into()
            };
            resp
        }
        Outcome::Respond(Answer::Refusal(r)) => {
            ev.outcome = format!("refused: {}", r.code.as_str());
            ev.error = r.details.proxy_error.clone();
            json_response(r.status(), &r.body(envelope))
        }
        Outcome::Respond(Answer::Redirect { status, location }) => {
            ev.outcome = format!("redirect: {location}");
            let mut resp = Response::new(full(""));
            *resp.status_mut() = status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Outcome::FallThrough => {
            ev.outcome = "fell through (no control plane modelled)".into();
            let r = Refusal::new(Code::NotFound);
            json_response(r.status(), &r.body(envelope))
        }
    };
    ev.status = resp.status().as_u16();
    resp
}
