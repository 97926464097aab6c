//! A user's browser (the scenario step `kind = "browser"`): a reqwest client with a cookie jar,
//! following redirects across hosts through the sim network as a browser does.
//!
//! - Every navigation goes to the edge (the only public entry of a world) with `Host` set to the
//!   URL's host; cookies are stored and sent for the URL as the user sees it (`https://…`), so
//!   domain and path scoping and `Secure` (sent on https only) are the jar's, not the transport's.
//!   A `Set-Cookie` whose `Domain` does not domain-match the host that set it is rejected, and the
//!   navigation says so (O10).
//! - Redirects: 301/302 turn a POST into a GET (as browsers do), 303 turns anything but HEAD into
//!   a GET, 307/308 keep method and body; `Location` is resolved against the current URL. At most
//!   `max_navigations` (default 20) requests.
//! - `as = "alice"` starts the browser signed in as alice at the control plane (a fresh session,
//!   its cookie in the jar for `VITE_PUBLIC_URL`); `login = "alice"` makes the user fill in the
//!   control plane's `/login` form as alice when the browser lands on it.
//!
//! The step's document lists every navigation (method, URL, status, cookies sent, `Set-Cookie`
//! received and whether the jar kept it, `Location`, and the hops' decisions), then the final page.

use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::{CookieStore, Jar};
use serde::Serialize;

use crate::control_plane::cookies;
use crate::router::step::canonical::public_origin;
use crate::runtime::World;
use crate::scenario::Step;
use crate::trace::{Event, TRACE_HEADER};
use crate::trace::{chain_order, shown_headers};

/// A browser's redirect limit.
pub const MAX_NAVIGATIONS: usize = 20;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NavigationDoc {
    pub method: String,
    pub url: String,
    pub status: u16,
    /// The `Cookie` header sent (`name=value` pairs), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookies_sent: Option<String>,
    /// Each `Set-Cookie` received, with what the jar did with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cookies_set: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why the browser made this request (`start`, `redirect 302`, `submitted the login form`).
    pub because: String,
    pub hops: Vec<Event>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrowserDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_in_as: Option<String>,
    pub navigations: Vec<NavigationDoc>,
    pub final_url: String,
    /// The user the worker found a session for on the final navigation (the user the app saw).
    pub final_user: Option<String>,
    /// Why the browser stopped, when it was not a final page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// The page a browser ended on.
pub struct FinalPage {
    pub status: u16,
    /// Sorted, without `Date`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub truncated: bool,
}

/// What a browser step did.
pub struct BrowserRun {
    pub doc: BrowserDoc,
    pub final_page: Option<FinalPage>,
}

/// Whether `host` domain-matches a cookie's `Domain` (RFC 6265 §5.1.3).
fn domain_matches(host: &str, domain: &str) -> bool {
    let d = domain.trim_start_matches('.').to_lowercase();
    host == d || host.ends_with(&format!(".{d}"))
}

/// What the jar does with one `Set-Cookie` from `url`.
fn verdict(url: &url::Url, set_cookie: &str) -> String {
    let host = url.host_str().unwrap_or("");
    let attrs: Vec<(String, String)> = set_cookie
        .split(';')
        .skip(1)
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            (k.trim().to_lowercase(), v.trim().to_string())
        })
        .collect();
    if let Some((_, d)) = attrs.iter().find(|(k, _)| k == "domain")
        && !domain_matches(host, d)
    {
        return format!("{set_cookie} → rejected: Domain={d} does not match {host}");
    }
    if attrs.iter().any(|(k, _)| k == "secure") && url.scheme() != "https" {
        return format!("{set_cookie} → rejected: Secure from an http page");
    }
    format!("{set_cookie} → stored")
}

/// Runs a browser step: navigations until a page that is not a redirect (or the limit).
pub async fn run(world: &World, step: &Step) -> Result<BrowserRun, String> {
    let jar = std::sync::Arc::new(Jar::default());
    let mut b = BrowserDoc {
        signed_in_as: None,
        navigations: vec![],
        final_url: step.url.clone(),
        final_user: None,
        stopped: None,
    };
    let public = match public_origin(world.spec().env.public_url()) {
        Ok(p) => p,
        Err(e) => return Err(format!("VITE_PUBLIC_URL: {e}")),
    };
    if let Some(user) = &step.as_user {
        let Some(s) = world.platform().create_session(user) else {
            return Err(format!("as: no user {user:?} in the world"));
        };
        let cross = world
            .spec()
            .auth
            .cross_subdomain_cookies_for(world.generation);
        let cookie = cookies::set_session(&public, &s.token, cross);
        if let (Ok(u), Ok(v)) = (
            url::Url::parse(&public.origin),
            http::HeaderValue::from_str(&cookie),
        ) {
            jar.set_cookies(&mut std::iter::once(&v), &u);
        }
        b.signed_in_as = Some(format!(
            "{user} (session {}, at {})",
            s.token, public.origin
        ));
    }
    // Over TLS the browser trusts the world's CA only, and every name resolves to loopback (the
    // edge's TLS port is put in the URL it connects to; `Host` stays the page's authority).
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .use_preconfigured_tls((*world.tls_client()).clone())
        .dns_resolver(Arc::new(Loopback))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Err(format!("browser: {e}")),
    };
    let mut url = match url::Url::parse(&step.url) {
        Ok(u) => u,
        Err(e) => return Err(format!("url: {e}")),
    };
    let mut method = step.method.clone();
    let mut body = step.body.clone();
    let mut extra: Vec<(String, String)> = step.headers.clone();
    let mut because = "start".to_string();
    let mut logged_in = false;
    let max = step.max_navigations.unwrap_or(MAX_NAVIGATIONS);
    let edge = world.addrs.edge;
    let mut last: Option<FinalPage> = None;
    for _ in 0..max {
        let id = world.trace().next_id();
        let host = url.host_str().unwrap_or("").to_string();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let pq = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let sent = jar
            .cookies(&url)
            .and_then(|v| v.to_str().ok().map(str::to_string));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let target = if url.scheme() == "https" && world.tls_enabled() {
            format!("https://{host}:{}{pq}", world.addrs.edge_tls.port())
        } else {
            format!("http://{edge}{pq}")
        };
        let mut rb = client
            .request(m, target)
            .header("host", &authority)
            .header(TRACE_HEADER, &id);
        for (k, v) in &extra {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(c) = &sent {
            rb = rb.header("cookie", c.as_str());
        }
        if let Some(bd) = &body {
            rb = rb.body(bd.clone());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                b.stopped = Some(format!("request failed: {e}"));
                break;
            }
        };
        let status = resp.status().as_u16();
        let set: Vec<http::HeaderValue> = resp
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let cookies_set = set
            .iter()
            .map(|v| verdict(&url, &String::from_utf8_lossy(v.as_bytes())))
            .collect();
        jar.set_cookies(&mut set.iter(), &url);
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers = shown_headers(resp.headers());
        let (bytes, truncated) = match resp.bytes().await {
            Ok(b) => (b.to_vec(), false),
            Err(_) => (vec![], true),
        };
        let evs = world
            .trace()
            .wait_finished(&id, REPLY_TIMEOUT, |_| true)
            .await;
        world.settle().await;
        let hops = chain_order(evs);
        b.final_user = hops.iter().find_map(|h| match h {
            Event::Worker(w) if w.session != "none" && !w.session.starts_with("none ") => {
                w.session.split(' ').next().map(str::to_string)
            }
            _ => None,
        });
        b.navigations.push(NavigationDoc {
            method: method.clone(),
            url: url.to_string(),
            status,
            cookies_sent: sent,
            cookies_set,
            location: location.clone(),
            because: because.clone(),
            hops,
        });
        b.final_url = url.to_string();
        last = Some(FinalPage {
            status,
            headers,
            body: bytes,
            truncated,
        });
        let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
        if let (true, Some(loc)) = (redirect, &location) {
            let next = match url.join(loc) {
                Ok(n) => n,
                Err(e) => {
                    b.stopped = Some(format!("bad Location {loc:?}: {e}"));
                    break;
                }
            };
            let to_get = (status == 303 && method != "HEAD")
                || (matches!(status, 301 | 302) && method == "POST");
            if to_get {
                method = "GET".into();
                body = None;
                extra.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
            }
            because = format!("redirect {status}");
            url = next;
            continue;
        }
        // The user fills in the sign-in form.
        if let Some(user) = &step.login
            && !logged_in
            && status == 200
            && method == "GET"
            && url.origin().ascii_serialization() == public.origin
            && url.path() == "/login"
        {
            logged_in = true;
            let redirect_url = url
                .query_pairs()
                .find(|(k, _)| k == "redirectUrl")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| "/".into());
            body = Some(crate::router::step::bridge::query(&[
                ("userId", user),
                ("redirectUrl", &redirect_url),
            ]));
            method = "POST".into();
            extra = vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )];
            because = format!("the user signed in as {user} (submitted the login form)");
            url.set_query(None);
            continue;
        }
        break;
    }
    if b.navigations.len() >= max && b.stopped.is_none() {
        let last_status = b.navigations.last().map(|n| n.status).unwrap_or(0);
        if matches!(last_status, 301 | 302 | 303 | 307 | 308) {
            b.stopped = Some(format!("too many redirects ({max} navigations)"));
        }
    }
    let final_page = last.map(|mut p| {
        p.headers.sort();
        p
    });
    Ok(BrowserRun { doc: b, final_page })
}

/// A resolver that answers every name with loopback (the sim network's hops all live there).
struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_verdicts() {
        let u = url::Url::parse("https://misha.iterate.town/x").unwrap();
        assert!(verdict(&u, "a=1; Path=/; Secure").ends_with("stored"));
        assert!(verdict(&u, "a=1; Domain=iterate.town").ends_with("stored"));
        assert!(
            verdict(&u, "a=1; Domain=os.iterate.com")
                .ends_with("rejected: Domain=os.iterate.com does not match misha.iterate.town")
        );
        let h = url::Url::parse("http://misha.iterate.town/x").unwrap();
        assert!(verdict(&h, "a=1; Secure").contains("rejected"));
    }
}
