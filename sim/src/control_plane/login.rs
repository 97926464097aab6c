//! The sim sign-in (standing in for Better Auth's), `/api/auth/*`, and the control plane's app.
//!
//! - `GET /login?redirectUrl=…` shows a form (a user id and the redirect), or, to a user already
//!   signed in, redirects to `redirectUrl` at once (our reading); `POST /login` with
//!   `userId` (and `redirectUrl`) signs that user in: a new session, its cookie (set on the host
//!   that served the form), and a 302 to `redirectUrl` normalized as a redirect path (another
//!   origin → `/`; our reading). An unknown user → 401 `{"message":"Unknown user"}`.
//! - `GET /api/auth/get-session` (and `/api/auth/session`): the session as JSON, or `null`.
//!   Any other `/api/auth/*` → 404.
//! - Everything else: the app, a JSON page naming the host, the path and the user.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Form, Query, State};
use http::{Method, Response, StatusCode, Uri};
use serde_json::json;

use super::{Caller, ControlPlaneCtx, Reply, cookies, event, finish};
use crate::net::{BoxBody, full};
use crate::router::step::bridge::normalize_redirect_path;

/// The form a user fills in (the browser step's `login` fills it).
pub async fn form(
    State(ctx): State<Arc<ControlPlaneCtx>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response<BoxBody> {
    let ev = event(&caller, method.as_str(), &uri, "login (form)");
    let redirect = q.get("redirectUrl").cloned().unwrap_or_else(|| "/".into());
    if caller.session.is_some() {
        let to = normalize_redirect_path(Some(&redirect));
        let reply = Reply::redirect(ev, &to, "already signed in: to redirectUrl");
        return finish(&ctx, &caller, reply);
    }
    let html = format!(
        "<form method=\"post\" action=\"/login\"><input name=\"userId\"><input type=\"hidden\" name=\"redirectUrl\" value=\"{}\"><button>Sign in</button></form>",
        redirect.replace('&', "&amp;").replace('"', "&quot;")
    );
    let mut resp = Response::new(full(html));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    finish(
        &ctx,
        &caller,
        Reply {
            ev,
            resp,
            why: None,
        },
    )
}

#[derive(serde::Deserialize)]
pub struct SignIn {
    #[serde(rename = "userId", default)]
    user_id: String,
    #[serde(rename = "redirectUrl", default)]
    redirect_url: Option<String>,
}

pub async fn sign_in(
    State(ctx): State<Arc<ControlPlaneCtx>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    Form(f): Form<SignIn>,
) -> Response<BoxBody> {
    let mut ev = event(&caller, method.as_str(), &uri, "login (sign in)");
    let reply = match ctx.platform.create_session(&f.user_id) {
        None => Reply::json(
            ev,
            StatusCode::UNAUTHORIZED,
            json!({"message": "Unknown user"}),
        ),
        Some(s) => {
            ev.decisions
                .push(format!("signed in {} → session {}", s.user.id, s.token));
            let cross = ctx.auth.cross_subdomain_cookies_for(ctx.generation);
            let cookie = cookies::set_session(&ctx.public, &s.token, cross);
            let to = normalize_redirect_path(f.redirect_url.as_deref());
            Reply::redirect(ev, &to, "signed in: to redirectUrl").set_cookie(&cookie)
        }
    };
    finish(&ctx, &caller, reply)
}

pub async fn auth_api(
    State(ctx): State<Arc<ControlPlaneCtx>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
) -> Response<BoxBody> {
    let ev = event(&caller, method.as_str(), &uri, "/api/auth/*");
    let reply = match uri.path() {
        "/api/auth/get-session" | "/api/auth/session" => {
            let body = match &caller.session {
                Some(s) => json!({
                    "session": {"token": s.token, "userId": s.user.id},
                    "user": {"id": s.user.id, "email": s.user.email, "role": s.user.role.as_str()},
                }),
                None => serde_json::Value::Null,
            };
            Reply::json(ev, StatusCode::OK, body)
        }
        _ => Reply::json(ev, StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    };
    finish(&ctx, &caller, reply)
}

/// The control plane's app (TanStack in production): a page for any other path.
pub async fn app_page(
    State(ctx): State<Arc<ControlPlaneCtx>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
) -> Response<BoxBody> {
    let ev = event(&caller, method.as_str(), &uri, "app");
    let body = json!({
        "app": "control-plane",
        "host": caller.host,
        "path": uri.path(),
        "user": caller.session.as_ref().map(|s| s.user.id.clone()),
    });
    finish(&ctx, &caller, Reply::json(ev, StatusCode::OK, body))
}
