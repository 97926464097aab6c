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
