//! bridge-start (`GET /api/project-ingress-proxy-auth/bridge-start` on the control-plane host):
//! the control plane's half of the auth bridge. It turns the control plane's session into a
//! one-time token and sends the browser to the ingress host to exchange it.
//!
//! - W2 (V1–V2): `projectIngressProxyHost` (missing → 400 `Missing projectIngressProxyHost`;
//!   not matched or not parsable → 400 `Invalid projectIngressProxyHost`) and `redirectPath`; an
//!   invalid canonical host → 500 `PROJECT_INGRESS_PROXY_CANONICAL_HOST is invalid`; the token goes
//!   to `<scheme>://<canonical>/api/auth/project-ingress-proxy/one-time-token/exchange`.
//! - W5 (V3+): `projectIngressProxyHost` or the legacy `subdomain` (empty or dotted → 400
//!   `Invalid subdomain`; host = `<subdomain>.<domain>`), neither → 400 `Missing
//!   projectIngressProxyHost or subdomain`; `path` or the legacy `redirectPath`; the host parsed
//!   and canonicalized (failure → 400 `Invalid projectIngressProxyHost`); V5+: a custom host must
//!   be under a project's custom domain (one query) and is its own canonical host; the token goes
//!   to `<scheme>://<canonical>/_/exchange-token`.
//!
//! Both: the redirect path normalized (another origin → `/`); no session → 302
//! `<VITE_PUBLIC_URL>/login?redirectUrl=<this bridge-start, rebuilt with the canonical host and
//! the normalized path>`; a session → `generateOneTimeToken` (a `verification` row
//! `one-time-token:<token>` holding the session token, valid 3 minutes) and 302 to the exchange.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use http::{Method, Response, StatusCode, Uri};

use super::{Caller, ControlPlaneCtx, Reply, event, finish};
use crate::model::Generation;
use crate::net::BoxBody;
use crate::router::step::bridge::{BRIDGE_START, normalize_redirect_path, query};
use crate::router::step::lookup::{self, Db};
use crate::router::step::{canonical, hostname};

pub const PATH: &str = BRIDGE_START;
/// Better Auth's one-time-token plugin default lifetime.
pub const OTT_TTL_S: u64 = 180;

pub async fn bridge_start(
    State(ctx): State<Arc<ControlPlaneCtx>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response<BoxBody> {
    let w5 = ctx.generation >= Generation::V3;
    let route = if w5 {
        "bridge-start (W5)"
    } else {
        "bridge-start (W2)"
    };
    let ev = event(&caller, method.as_str(), &uri, route);
    let reply = if w5 {
        w5_start(&ctx, &caller, ev, &q).await
    } else {
        w2_start(&ctx, &caller, ev, &q)
    };
    finish(&ctx, &caller, reply)
}

fn w2_start(
    ctx: &ControlPlaneCtx,
    caller: &Caller,
    mut ev: crate::trace::ControlPlaneEvent,
    q: &HashMap<String, String>,
) -> Reply {
    let bad = StatusCode::BAD_REQUEST;
    let Some(host) = q.get("projectIngressProxyHost") else {
        return Reply::error(ev, bad, "Missing projectIngressProxyHost");
    };
    let canonical_host =
        match canonical::canonical_host_v2(ctx.canonical_host.as_deref(), &ctx.matchers) {
            Ok(c) => c,
            Err(e) => {
                ev.decisions.push(e);
                return Reply::error(
                    ev,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "PROJECT_INGRESS_PROXY_CANONICAL_HOST is invalid",
                );
            }
        };
    let host = host.trim().to_lowercase();
    if !ctx.matchers.iter().any(|m| m.matches(&host)) || hostname::parse_standard(&host).is_err() {
        ev.decisions
            .push(format!("{host:?} is not a matched, parsable ingress host"));
        return Reply::error(ev, bad, "Invalid projectIngressProxyHost");
    }
    let canonical = canonical::canonical_v2(&host, &canonical_host);
    let path = normalize_redirect_path(q.get("redirectPath").map(String::as_str));
    ev.decisions.push(format!(
        "ingress host {host} → canonical {canonical}; redirect path {path}"
    ));
    let exchange = format!(
        "{}://{canonical}{}",
        ctx.public.scheme,
        super::exchange::PATH
    );
    issue(
        ctx,
        caller,
        ev,
        &canonical,
        &path,
        "redirectPath",
        &exchange,
    )
}

async fn w5_start(
    ctx: &ControlPlaneCtx,
    caller: &Caller,
    mut ev: crate::trace::ControlPlaneEvent,
    q: &HashMap<String, String>,
) -> Reply {
    let bad = StatusCode::BAD_REQUEST;
    let domain = ctx.ingress_domain.clone().unwrap_or_default();
    let host = match (q.get("projectIngressProxyHost"), q.get("subdomain")) {
        (Some(h), _) => h.trim().to_lowercase(),
        (None, Some(s)) => {
            if s.is_empty() || s.contains('.') {
                return Reply::error(ev, bad, "Invalid subdomain");
            }
            ev.decisions
                .push(format!("legacy subdomain {s:?} → host {s}.{domain}"));
            format!("{}.{domain}", s.to_lowercase())
        }
        (None, None) => {
            return Reply::error(ev, bad, "Missing projectIngressProxyHost or subdomain");
        }
    };
    let canonical = match hostname::parse_standard(&host) {
        Ok(p) if canonical::is_project_ingress_hostname(&host, &domain) => {
            canonical::canonical_v3(&p, &domain)
        }
        _ if ctx.generation >= Generation::V5
            && !canonical::is_project_ingress_hostname(&host, &domain) =>
        {
            // V5+: a custom host must pass `shouldHandle…` (one query); it is its own canonical
            // host.
            let db = Db {
                db: &ctx.db,
                trace_id: caller.trace_id.as_deref(),
            };
            match lookup::project_by_custom_domain(db, &host).await {
                Ok(Some(p)) => {
                    ev.decisions.push(format!(
                        "custom host {host}: project {} (customDomain {})",
                        p.slug,
                        p.custom_domain.as_deref().unwrap_or("")
                    ));
                    host.clone()
                }
                Ok(None) => {
                    ev.decisions
                        .push(format!("{host:?} is under no custom domain"));
                    return Reply::error(ev, bad, "Invalid projectIngressProxyHost");
                }
                Err(e) => {
                    ev.decisions
                        .push(format!("getProjectByCustomDomain threw: {e}"));
                    return Reply::error(ev, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
                }
            }
        }
        _ => {
            ev.decisions
                .push(format!("{host:?} is not a parsable ingress host"));
            return Reply::error(ev, bad, "Invalid projectIngressProxyHost");
        }
    };
    let raw_path = q.get("path").or_else(|| q.get("redirectPath"));
    let path = normalize_redirect_path(raw_path.map(String::as_str));
    ev.decisions.push(format!(
        "ingress host {host} → canonical {canonical}; redirect path {path}"
    ));
    let exchange = format!(
        "{}://{canonical}{}",
        ctx.public.scheme,
        crate::router::v3::EXCHANGE_TOKEN_PATH
    );
    issue(ctx, caller, ev, &canonical, &path, "path", &exchange)
}

/// Without a session: sign in first, then this bridge again. With one: a one-time token, and
/// to the exchange on the ingress host.
fn issue(
    ctx: &ControlPlaneCtx,
    caller: &Caller,
    mut ev: crate::trace::ControlPlaneEvent,
    canonical: &str,
    path: &str,
    path_param: &str,
    exchange_url: &str,
) -> Reply {
    let Some(session) = &caller.session else {
        let bridge = format!(
            "{PATH}?{}",
            query(&[("projectIngressProxyHost", canonical), (path_param, path)])
        );
        let to = format!(
            "{}/login?{}",
            ctx.public.origin,
            query(&[("redirectUrl", &bridge)])
        );
        return Reply::redirect(ev, &to, "no control-plane session: sign in first");
    };
    let token = ctx.platform.new_token();
    let expires = ctx.platform.now() + OTT_TTL_S;
    ctx.platform
        .insert_verification(&format!("one-time-token:{token}"), &session.token, expires);
    ev.decisions.push(format!(
        "generateOneTimeToken: {token} for session {} of {} (expires in {OTT_TTL_S} s)",
        session.token, session.user.id
    ));
    let to = format!(
        "{exchange_url}?{}",
        query(&[("token", &token), ("redirectPath", path)])
    );
    Reply::redirect(
        ev,
        &to,
        "one-time token issued: exchange it on the ingress host",
    )
}
