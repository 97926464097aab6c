//! The OS router (the `os` worker's ingress path), by generation (docs/behaviour.md §3). The world's
//! `router` field (or a run's `--router`) picks the generation; each is a file that reads as its
//! spec's step list ([`v0`] … [`v6`]), built from the shared [`step`]s. [`route`] runs it and
//! renders its [`Outcome`] once (a refusal in the generation's error envelope, with the details
//! gathered by the steps), and records the router's trace event. [`handle`] is V0's whole worker
//! (no control plane); V1+ run behind the worker's middleware (`crate::worker`).

pub mod cache;
pub mod step;
pub mod v0;
pub mod v1;
pub mod v2;
pub mod v3;
pub mod v4;
pub mod v5;
pub mod v6;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::db::{Database, DbError};
use crate::model::{Code, Details, Envelope, Generation, ProjectSpec, Refusal};
use crate::net::{BoxBody, full, json_response, text_response};
use crate::platform::{Platform, SessionRow};
use crate::trace::{Event, RouterEvent, TRACE_HEADER, TraceStore};
use step::canonical::PublicOrigin;
use step::matchers::HostGlob;
use step::transport::Transport;

/// What the router reads: its generation, its environment, the platform's records, the
/// provider transport, and the trace.
pub struct RouterCtx {
    pub generation: Generation,
    /// `PROJECT_INGRESS_PROXY_HOST_MATCHERS`, parsed (V0–V2).
    pub matchers: Vec<HostGlob>,
    /// `PROJECT_INGRESS_PROXY_CANONICAL_HOST`, as configured (V2).
    pub canonical_host: Option<String>,
    /// `PROJECT_INGRESS_DOMAIN`, normalized (V3+).
    pub ingress_domain: Option<String>,
    /// `VITE_PUBLIC_URL` (V2+: where the auth bridge is, and the ingress scheme).
    pub public: PublicOrigin,
    pub platform: Arc<Platform>,
    /// The platform database (V4+ query it; every query is a `db` hop event).
    pub db: Arc<Database>,
    /// V6: one resolution cache per isolate (`[os] isolates`, at least one).
    pub isolates: Vec<cache::ResolutionCache>,
    /// Requests served so far (the next isolate, round robin).
    pub served: AtomicUsize,
    pub transport: Transport,
    pub trace: Arc<TraceStore>,
}

impl RouterCtx {
    /// The isolate the next request runs in: round robin over `[os] isolates` (our reading of
    /// how the Workers runtime spreads requests; production's placement is not observable).
    pub fn next_isolate(&self) -> usize {
        self.served.fetch_add(1, Ordering::SeqCst) % self.isolates.len().max(1)
    }
}

/// What the worker hands the router besides the request (V5+).
#[derive(Debug, Clone, Default)]
pub struct Handoff {
    /// `cachedCustomDomainProject`: the project the worker's custom-domain query found.
    pub custom_project: Option<ProjectSpec>,
    /// The isolate serving the request (V6).
    pub isolate: usize,
}

/// Why a V4+ generation stopped: a refusal of its own, or a database query that failed.
#[derive(Debug)]
pub enum Stop {
    Refused(Refusal),
    Db(DbError),
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Stop {
        Stop::Refused(r)
    }
}

impl From<Code> for Stop {
    fn from(c: Code) -> Stop {
        Stop::Refused(c.into())
    }
}

impl From<crate::model::ParseError> for Stop {
    fn from(e: crate::model::ParseError) -> Stop {
        Stop::Refused(e.into())
    }
}

impl From<DbError> for Stop {
    fn from(e: DbError) -> Stop {
        Stop::Db(e)
    }
}

impl From<Stop> for Outcome {
    fn from(s: Stop) -> Outcome {
        match s {
            Stop::Refused(r) => r.into(),
            Stop::Db(e) => Outcome::Respond(Answer::Failed(e.to_string())),
        }
    }
}

/// What a generation decided.
pub enum Outcome {
    /// Forwarded to the machine: its answer, relayed.
    Forward(Response<BoxBody>),
    /// The router answers itself.
    Respond(Answer),
    /// Not the router's request (`null`): the worker's next handler takes it (V2: login and auth
    /// paths without a session; V3+: `/_/exchange-token`).
    FallThrough(Request<Incoming>),
}

/// An answer of the router's own.
pub enum Answer {
    Refusal(Refusal),
    /// V2+: to the canonical host (301) or the auth bridge (302).
    Redirect {
        status: StatusCode,
        location: String,
        why: &'static str,
    },
    /// V4+: a database query threw; nothing in the handler catches it, so the worker's error
    /// handler answers (our reading: Hono's default, `500 Internal Server Error` as text).
    Failed(String),
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Outcome {
        Outcome::Respond(Answer::Refusal(r))
    }
}

impl Outcome {
    fn redirect((status, location): (StatusCode, String), why: &'static str) -> Outcome {
        Outcome::Respond(Answer::Redirect {
            status,
            location,
            why,
        })
    }
}

/// The error body's shape in a generation.
fn envelope(g: Generation) -> Envelope {
    match g {
        Generation::V0 => Envelope::Code,
        Generation::V1
        | Generation::V2
        | Generation::V3
        | Generation::V4
        | Generation::V5
        | Generation::V6 => Envelope::CodeAndDetails,
    }
}

/// What the router did with a request.
pub enum Routed {
    Answered(Response<BoxBody>),
    /// `null`: the worker's next handler takes the request.
    FellThrough(Request<Incoming>),
}

fn trace_id(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(TRACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// V0's worker: the router alone answers every request the edge sends.
pub async fn handle(
    ctx: Arc<RouterCtx>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<BoxBody> {
    match route(&ctx, req, None).await {
        Routed::Answered(r) => r,
        // V0 never falls through; a generation that does runs behind the worker.
        Routed::FellThrough(_) => json_response(
            StatusCode::NOT_FOUND,
            &Refusal::new(Code::NotFound).body(envelope(ctx.generation)),
        ),
    }
}

/// Runs the generation with the session the worker found, renders its outcome, records the
/// router's event.
pub async fn route(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
) -> Routed {
    route_with(ctx, req, session, Handoff::default()).await
}

/// [`route`] with what the worker found (V5+: the custom domain's project; V6: the isolate).
pub async fn route_with(
    ctx: &RouterCtx,
    req: Request<Incoming>,
    session: Option<&SessionRow>,
    handoff: Handoff,
) -> Routed {
    let trace_id = trace_id(&req);
    let mut ev = RouterEvent::new(ctx.generation.as_str());
    let tid = trace_id.as_deref();
    let decided = match ctx.generation {
        Generation::V0 => v0::route(ctx, req, &mut ev, tid)
            .await
            .map_err(Outcome::from),
        Generation::V1 => v1::route(ctx, req, session, &mut ev, tid)
            .await
            .map_err(Outcome::from),
        Generation::V2 => v2::route(ctx, req, session, &mut ev, tid)
            .await
            .map_err(Outcome::from),
        Generation::V3 => v3::route(ctx, req, session, &mut ev, tid)
            .await
            .map_err(Outcome::from),
        Generation::V4 => v4::route(ctx, req, session, &mut ev, tid)
            .await
            .map_err(Outcome::from),
        Generation::V5 => v5::route(ctx, req, session, &handoff, &mut ev, tid)
            .await
            .map_err(Outcome::from),
        Generation::V6 => v6::route(ctx, req, session, &handoff, &mut ev, tid)
            .await
            .map_err(Outcome::from),
    };
    let outcome = decided.unwrap_or_else(|o| o);
    let routed = match outcome {
        Outcome::FallThrough(req) => {
            ev.outcome = "fell through (null): the control plane handles it".into();
            Routed::FellThrough(req)
        }
        other => Routed::Answered(render(other, ctx, &mut ev)),
    };
    if let Some(id) = trace_id {
        ctx.trace.record(&id, Event::Router(Box::new(ev)));
    }
    routed
}

/// The envelope's `details` (V1+): the context the steps recorded (hostname and labels, the
/// matchers or the ingress domain, the parsed target or its error), then the refusal's own.
fn details(r: &Refusal, ctx: &RouterCtx, ev: &RouterEvent) -> Details {
    let mut d = Details {
        hostname: Some(ev.hostname.clone()),
        ..Details::default()
    };
    if ev.custom_domain.is_some() {
        // V4+ custom-domain refusals: `{hostname}`, and what the resolution or transport said.
        d.resolution = r.details.resolution.clone();
        d.proxy_error = r.details.proxy_error.clone();
        return d;
    }
    if r.code == Code::IngressNotConfigured && ctx.generation >= Generation::V3 {
        // V3: `{hostname}` only.
        return d;
    }
    d.hostname_labels = Some(step::hostname::labels(&ev.hostname));
    match ctx.generation {
        Generation::V0 | Generation::V1 | Generation::V2 => {
            d.host_matchers = Some(ctx.matchers.iter().map(|m| m.raw.clone()).collect());
            d.matched_host_matcher = ev.matched.clone();
        }
        Generation::V3 | Generation::V4 | Generation::V5 | Generation::V6 => {
            d.project_ingress_domain = ctx.ingress_domain.clone()
        }
    }
    d.parsed_target = ev.parsed.as_ref().map(|p| {
        let id = match p.kind {
            crate::model::TargetKind::Machine => "machineId",
            crate::model::TargetKind::Project => "projectSlug",
        };
        serde_json::json!({
            "kind": p.kind.as_str(),
            id: p.id,
            "targetPort": p.target_port,
            "isPortExplicit": p.port_explicit,
            "rootDomain": p.root_domain,
        })
    });
    d.parsed_target_error = r.details.parsed_target_error.clone();
    d.resolution = r.details.resolution.clone();
    d.proxy_error = r.details.proxy_error.clone();
    d
}

/// The one place an outcome becomes a response (and the event's outcome and status).
fn render(outcome: Outcome, ctx: &RouterCtx, ev: &mut RouterEvent) -> Response<BoxBody> {
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
            let body = match envelope(ctx.generation) {
                Envelope::Code => r.body(Envelope::Code),
                Envelope::CodeAndDetails => Refusal {
                    code: r.code,
                    details: Box::new(details(&r, ctx, ev)),
                }
                .body(Envelope::CodeAndDetails),
            };
            json_response(r.status(), &body)
        }
        Outcome::Respond(Answer::Redirect {
            status,
            location,
            why,
        }) => {
            ev.outcome = format!("redirect ({why}): {location}");
            let mut resp = Response::new(full(""));
            *resp.status_mut() = status;
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Outcome::Respond(Answer::Failed(message)) => {
            ev.outcome = "failed: the worker's error handler answers".into();
            ev.error = Some(message);
            text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Outcome::FallThrough(_) => {
            // Handled by `route`; never rendered.
            let r = Refusal::new(Code::NotFound);
            json_response(r.status(), &r.body(envelope(ctx.generation)))
        }
    };
    ev.status = resp.status().as_u16();
    resp
}
