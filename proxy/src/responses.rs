//! The proxy's own responses: `/health` and JSON refusals with stable error codes.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type handed to hyper before logging is attached.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// Every refusal the proxy makes, with its status and stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    MissingTargetHost,
    InvalidTargetHost,
    /// The target is the proxy's own port: forwarding would loop.
    TargetIsSelf,
    Unauthorized,
    /// The request itself is malformed (duplicate Host, unusable request target).
    InvalidRequest,
    MethodNotAllowed,
    /// The app could not be reached or failed before sending a response head.
    ProxyError,
    /// The app did not send a response head in time.
    UpstreamTimeout,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::MissingTargetHost
            | ProxyError::InvalidTargetHost
            | ProxyError::TargetIsSelf
            | ProxyError::InvalidRequest => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ProxyError => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ProxyError::MissingTargetHost => "missing_proxy_target_host",
            ProxyError::InvalidTargetHost => "invalid_proxy_target_host",
            ProxyError::TargetIsSelf => "proxy_target_is_self",
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::InvalidRequest => "invalid_request",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::ProxyError => "proxy_error",
            ProxyError::UpstreamTimeout => "upstream_timeout",
        }
    }
}

pub(crate) fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub(crate) fn empty() -> BoxBody {
    full(Bytes::new())
}

/// The body of every refusal: `{"error":"<code>"}`.
pub(crate) fn error_body(err: ProxyError) -> String {
    format!("{{\"error\":\"{}\"}}", err.code())
}

/// `{"error":"<code>"}` with `application/json` and an explicit length. (Whether the connection
/// closes after it is the handler's decision, from the framing guard's.)
pub fn json_error(err: ProxyError) -> Response<BoxBody> {
    let body = error_body(err);
    let mut resp = Response::new(full(body.clone()));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

/// `200 OK`, `text/plain; charset=utf-8`.
pub fn health() -> Response<BoxBody> {
    let mut resp = Response::new(full("OK"));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
    resp
}
