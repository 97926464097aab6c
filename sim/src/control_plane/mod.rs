//! The control plane: the OS worker's own routes and app (an axum service), reached when the
//! ingress router does not take a request or returns `null` (see `crate::worker` for the
//! middleware order). It holds the auth bridge in both versions (W2 for V1–V2, W5 for V3+,
//! [`bridge`]), the one-time-token exchange in both versions ([`exchange`]), a sim sign-in
//! standing in for Better Auth's (`/login`, [`login`]), `/api/auth/*`, and a stand-in for the app.
//! Every request it serves records a `control_plane` hop event: the session, what was checked,
//! tokens issued and consumed, cookies set, the redirect and why.

pub mod bridge;
pub mod cookies;
pub mod exchange;
pub mod login;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use http::header::{LOCATION, SET_COOKIE};
use http::{Response, StatusCode};

use crate::model::{AuthSpec, Generation};
use crate::net::{BoxBody, json_response};
use crate::platform::{Platform, SessionRow};
use crate::router::step::canonical::PublicOrigin;
use crate::router::step::matchers::HostGlob;
use crate::trace::{ControlPlaneEvent, Event, TraceStore};

/// What the control plane reads.
pub struct ControlPlaneCtx {
    pub generation: Generation,
    /// `VITE_PUBLIC_URL`.
    pub public: PublicOrigin,
    pub platform: Arc<Platform>,
    /// V5+: custom hosts are looked up in the database.
    pub db: Arc<crate::db::Database>,
    /// W2 reads the matchers and the canonical host; W5 the ingress domain.
    pub matchers: Vec<HostGlob>,
    pub canonical_host: Option<String>,
    pub ingress_domain: Option<String>,
    pub auth: AuthSpec,
    pub trace: Arc<TraceStore>,
}

/// What the worker's middleware hands on with each request (a request extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The hostname the worker routed on.
    pub host: String,
    pub session: Option<SessionRow>,
    pub trace_id: Option<String>,
}

impl Caller {
    fn user(&self) -> &str {
        self.session
            .as_ref()
            .map(|s| s.user.id.as_str())
            .unwrap_or("none")
    }
}

/// The control plane's routes, in the worker's order after the ingress middleware.
pub fn app(ctx: Arc<ControlPlaneCtx>) -> Router {
    let mut r = Router::new().route(bridge::PATH, get(bridge::bridge_start));
    if ctx.generation >= Generation::V3 {
        // W5; W2 had no such route.
        r = r.route(
            crate::router::v3::EXCHANGE_TOKEN_PATH,
            get(exchange::exchange_token),
        );
    }
    r.route(exchange::PATH, get(exchange::exchange))
        .route("/login", get(login::form).post(login::sign_in))
        .route("/api/auth/{*rest}", get(login::auth_api))
        .fallback(login::app_page)
        .with_state(ctx)
}

/// A handler's answer, with its event.
pub struct Reply {
    pub ev: ControlPlaneEvent,
    pub resp: Response<BoxBody>,
    /// Why it redirects.
    pub why: Option<String>,
}

impl Reply {
    pub fn json(ev: ControlPlaneEvent, status: StatusCode, v: serde_json::Value) -> Reply {
        Reply {
            ev,
            resp: json_response(status, &v),
            why: None,
        }
    }

    /// `{"error": message}` (the bridge's refusals).
    pub fn error(ev: ControlPlaneEvent, status: StatusCode, message: &str) -> Reply {
        Reply::json(ev, status, serde_json::json!({ "error": message }))
    }

    pub fn redirect(ev: ControlPlaneEvent, location: &str, why: &str) -> Reply {
        let mut resp = Response::new(crate::net::full(""));
        *resp.status_mut() = StatusCode::FOUND;
        if let Ok(v) = http::HeaderValue::from_str(location) {
            resp.headers_mut().insert(LOCATION, v);
        }
        Reply {
            ev,
            resp,
            why: Some(why.into()),
        }
    }

    pub fn set_cookie(mut self, cookie: &str) -> Reply {
        if let Ok(v) = http::HeaderValue::from_str(cookie) {
            self.resp.headers_mut().append(SET_COOKIE, v);
        }
        self
    }
}

/// Records the event (its cookies, redirect, status and outcome read from the response) and
/// returns the response.
pub fn finish(ctx: &ControlPlaneCtx, caller: &Caller, reply: Reply) -> Response<BoxBody> {
    let Reply { mut ev, resp, why } = reply;
    ev.status = resp.status().as_u16();
    ev.cookies_set = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
        ev.redirect = Some(loc.to_string());
        ev.outcome = format!("redirect: {}", why.unwrap_or_default());
    } else if ev.outcome.is_empty() {
        ev.outcome = if resp.status().is_success() {
            "answered".into()
        } else {
            "refused".into()
        };
    }
    if let Some(id) = &caller.trace_id {
        ctx.trace.record(id, Event::ControlPlane(Box::new(ev)));
    }
    resp
}

/// A new event for this request.
pub fn event(caller: &Caller, method: &str, uri: &http::Uri, route: &str) -> ControlPlaneEvent {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    ControlPlaneEvent::new(method, &caller.host, pq, route, caller.user())
}
