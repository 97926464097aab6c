//! Host extraction: which hostname the router routes on.

use http::Request;
use http::header;
use hyper::body::Incoming;

use crate::model::request_hostname;
use crate::trace::RouterEvent;

/// Step (V0): the URL's hostname (the `Host` the edge received), recorded with its source.
pub fn url_hostname(req: &Request<Incoming>, ev: &mut RouterEvent) {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ev.hostname = request_hostname(host);
    ev.host_source = "url".into();
}

/// Step (V1+, `getProjectIngressRequestHostname`): `X-Forwarded-Host`, else `Host`, else the URL
/// hostname; the first comma-separated value, trimmed, without its port, lowercased. The client
/// controls `X-Forwarded-Host` and it is trusted (O5). Recorded with its source.
pub fn forwarded_hostname(req: &Request<Incoming>, ev: &mut RouterEvent) {
    let (host, source) = request_host(req.headers());
    ev.hostname = host;
    ev.host_source = source.into();
}

/// The hostname V1+ route on and where it came from (shared with the worker's middleware).
pub fn request_host(headers: &http::HeaderMap) -> (String, &'static str) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (get("x-forwarded-host"), get("host")) {
        (Some(x), _) => (request_hostname(x), "x-forwarded-host"),
        (None, Some(h)) => (request_hostname(h), "host"),
        (None, None) => (String::new(), "url"),
    }
}
