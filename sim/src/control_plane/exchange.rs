//! The one-time-token exchange on the ingress host: the ingress host's half of the auth bridge.
//!
//! - `GET /_/exchange-token` (W5, V3+): a standard host must parse (400 `Invalid ingress host`)
//!   and be canonical (400 `Non-canonical ingress host`); V5+: a custom host must be under a
//!   project's custom domain (one query; 400 `Invalid ingress host`); the request then goes on internally as
//!   `GET /api/auth/project-ingress-proxy/one-time-token/exchange` with the same query.
//! - The Better Auth endpoint (`project-ingress-proxy-one-time-token-exchange`): `token` (at least
//!   one character) and `redirectPath`. Two versions (B10):
//!   find → delete → check expiry (missing → 400 `Invalid one-time token`, expired → 400 `One-time
//!   token expired`), where two concurrent exchanges of one token can both find it before either
//!   deletes it; and one `DELETE … WHERE identifier = $1 AND expires_at >= now RETURNING` (missing
//!   or expired → 400 `Invalid one-time token`), where exactly one can. Each statement takes the
//!   world's `[auth] db_latency_ms` (half before it runs, half after).
//!   Then the token's session (missing → 400 `Session not found for one-time token`), the session
//!   cookie set on the ingress host, and a 302 to the normalized redirect path (relative).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use http::{Method, Response, StatusCode, Uri};
use serde_json::json;

use super::{Caller, ControlPlaneCtx, Reply, cookies, event, finish};
use crate::model::{Exchange, Generation};
use crate::net::BoxBody;
use crate::router::step::bridge::normalize_redirect_path;
use crate::router::step::lookup::{self, Db};
use crate::router::step::{canonical, hostname};
use crate::trace::ControlPlaneEvent;

pub const PATH: &str = "/api/auth/project-ingress-proxy/one-time-token/exchange";

/// `GET /_/exchange-token` (W5).
pub async fn exchange_token(
    State(ctx): State<Arc<ControlPlaneCtx>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response<BoxBody> {
    let mut ev = event(&caller, method.as_str(), &uri, "exchange-token (W5)");
    let bad = StatusCode::BAD_REQUEST;
    let domain = ctx.ingress_domain.clone().unwrap_or_default();
    let custom = ctx.generation >= Generation::V5
        && !canonical::is_project_ingress_hostname(&caller.host, &domain);
    if custom {
        // V5+: a custom host must be known.
        let db = Db {
            db: &ctx.db,
            trace_id: caller.trace_id.as_deref(),
        };
        let reply = match lookup::project_by_custom_domain(db, &caller.host).await {
            Ok(Some(p)) => {
                ev.decisions.push(format!(
                    "custom host of project {}; forwarded internally as GET {PATH}",
                    p.slug
                ));
                consume(&ctx, ev, &q).await
            }
            Ok(None) => Reply::error(ev, bad, "Invalid ingress host"),
            Err(e) => Reply::error(ev, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        return finish(&ctx, &caller, reply);
    }
    let reply = match hostname::parse_standard(&caller.host) {
        Err(_) => Reply::error(ev, bad, "Invalid ingress host"),
        Ok(p) if canonical::canonical_v3(&p, &domain) != caller.host => {
            Reply::error(ev, bad, "Non-canonical ingress host")
        }
        Ok(_) => {
            ev.decisions
                .push(format!("forwarded internally as GET {PATH}"));
            consume(&ctx, ev, &q).await
        }
    };
    finish(&ctx, &caller, reply)
}

/// `GET /api/auth/project-ingress-proxy/one-time-token/exchange`.
pub async fn exchange(
    State(ctx): State<Arc<ControlPlaneCtx>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response<BoxBody> {
    let ev = event(&caller, method.as_str(), &uri, "one-time-token exchange");
    let reply = consume(&ctx, ev, &q).await;
    finish(&ctx, &caller, reply)
}

fn message(ev: ControlPlaneEvent, m: &str) -> Reply {
    Reply::json(ev, StatusCode::BAD_REQUEST, json!({ "message": m }))
}

/// One statement's round trip: half before it runs, half after.
async fn round_trip_half(ctx: &ControlPlaneCtx) {
    let half = ctx.auth.db_latency_ms / 2;
    if half > 0 {
        tokio::time::sleep(Duration::from_millis(half)).await;
    }
}

async fn consume(
    ctx: &ControlPlaneCtx,
    mut ev: ControlPlaneEvent,
    q: &HashMap<String, String>,
) -> Reply {
    let token = match q.get("token") {
        Some(t) if !t.is_empty() => t.clone(),
        _ => return message(ev, "token: at least 1 character is required"),
    };
    let identifier = format!("one-time-token:{token}");
    let p = &ctx.platform;
    let version = ctx.auth.exchange_for(ctx.generation);
    let session_token = match version {
        Exchange::FindDeleteCheck => {
            round_trip_half(ctx).await;
            let found = p.find_verification(&identifier);
            round_trip_half(ctx).await;
            let Some(row) = found else {
                ev.decisions.push(format!("find {identifier}: no row"));
                return message(ev, "Invalid one-time token");
            };
            ev.decisions.push(format!("find {identifier}: found"));
            round_trip_half(ctx).await;
            let deleted = p.delete_verification(&identifier);
            round_trip_half(ctx).await;
            ev.decisions
                .push(format!("delete {identifier}: {deleted} row(s)"));
            if row.expires_at < p.now() {
                ev.decisions
                    .push(format!("expired {} s ago", p.now() - row.expires_at));
                return message(ev, "One-time token expired");
            }
            ev.decisions.push(format!(
                "token {token} consumed (find → delete → check expiry)"
            ));
            row.value
        }
        Exchange::DeleteReturning => {
            round_trip_half(ctx).await;
            let row = p.delete_verification_returning(&identifier);
            round_trip_half(ctx).await;
            let Some(row) = row else {
                ev.decisions.push(format!(
                    "DELETE {identifier} AND expires_at >= now RETURNING: no row"
                ));
                return message(ev, "Invalid one-time token");
            };
            ev.decisions.push(format!(
                "token {token} consumed (DELETE … RETURNING: 1 row)"
            ));
            row.value
        }
    };
    let Some(session) = p.session(&session_token) else {
        return message(ev, "Session not found for one-time token");
    };
    ev.decisions.push(format!(
        "session {} of {}: setSessionCookie on the ingress host",
        session.token, session.user.id
    ));
    let cross = ctx.auth.cross_subdomain_cookies_for(ctx.generation);
    let cookie = cookies::set_session(&ctx.public, &session.token, cross);
    let to = normalize_redirect_path(q.get("redirectPath").map(String::as_str));
    Reply::redirect(ev, &to, "signed in on the ingress host: back to the page").set_cookie(&cookie)
}
