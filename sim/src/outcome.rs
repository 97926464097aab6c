//! What a step came to, read from its trace: the top-level `outcome` of a trace document (status,
//! the hop that refused, the error, what answered) and the chain's invariants, which every
//! trace must keep whatever the router generation (docs/trace.md).

use serde::Serialize;

use crate::trace::Event;

/// The step's result in one place (the trace document's `outcome`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The status the client got; none when no response came.
    pub status: Option<u16>,
    /// The hop that refused the request: `edge`, `router`, `provider (fly)`, `machine proxy
    /// (mach_123)`; none when no hop refused.
    pub refused_by: Option<String>,
    /// The error: the refusal's `error` code when its body has one, else the refusing hop's
    /// reason, else the client's own failure.
    pub error: Option<String>,
    /// What answered: `app mach_123:4096`, `control plane (login)`; none when nothing behind the
    /// hops answered.
    pub reached: Option<String>,
}

/// Which hop refused the request, and why (none when no hop refused).
pub fn refusal(hops: &[Event]) -> Option<(String, String)> {
    let mut found = None;
    for h in hops {
        match h {
            Event::Edge(e) if e.decision.starts_with("refused") => {
                found = Some((
                    "edge".to_string(),
                    e.decision.trim_start_matches("refused: ").to_string(),
                ));
            }
            Event::Router(r) if r.outcome.starts_with("refused") => {
                let why = match &r.error {
                    Some(e) => format!(
                        "{} {} ({e})",
                        r.status,
                        r.outcome.trim_start_matches("refused: ")
                    ),
                    None => format!("{} {}", r.status, r.outcome.trim_start_matches("refused: ")),
                };
                found = Some(("router".to_string(), why));
            }
            Event::Provider(p) if p.status.is_some_and(|s| s >= 400) => {
                found = Some((format!("provider ({})", p.provider), p.decision.clone()));
            }
            Event::Machine(m) if m.error.is_some() => {
                found = Some((
                    format!("machine proxy ({})", m.machine),
                    format!("{} {}", m.status, m.error.clone().unwrap_or_default()),
                ));
            }
            _ => {}
        }
    }
    found
}

/// What answered, from the hops: the last app reached, else the control plane's route.
fn reached(hops: &[Event]) -> Option<String> {
    let app = hops.iter().rev().find_map(|h| match h {
        Event::App(a) => Some(format!("app {}:{}", a.machine, a.port)),
        _ => None,
    });
    app.or_else(|| {
        hops.iter().rev().find_map(|h| match h {
            Event::ControlPlane(c) => Some(format!("control plane ({})", c.route)),
            _ => None,
        })
    })
}

/// A request's outcome from its hops (for a browser step, its last navigation's), the status and
/// the `error` code of the response the client got, and the client's own failure.
pub fn outcome(
    hops: &[Event],
    response: Option<(u16, Option<&str>)>,
    client_error: Option<&str>,
) -> Outcome {
    let refused = refusal(hops);
    let code = response.and_then(|(_, code)| code).map(str::to_string);
    let error = match (&refused, code) {
        (_, Some(code)) => Some(code),
        (Some((_, why)), None) => Some(why.clone()),
        (None, None) => client_error.map(str::to_string),
    };
    Outcome {
        status: response.map(|(s, _)| s),
        refused_by: refused.map(|(hop, _)| hop),
        error,
        reached: reached(hops),
    }
}

/// The invariants of one request's hops (docs/trace.md lists them):
///
/// 1. an app that answered was reached through its own machine's proxy, on the port that proxy
///    chose;
/// 2. the machine the router chose is the machine whose proxy received the request (the first
///    one, when the router followed redirects), and a request sent straight to a machine reached
///    that machine;
/// 3. the target header the router sent is the one the machine proxy received, and the port the
///    proxy chose is the port the router parsed from the hostname;
/// 4. a request the router did not forward, or that the control plane answered, reached no
///    machine;
/// 5. the status the client got is the router's, and the router's is the machine proxy's, when
///    each passed the other's answer on.
pub fn chain_violations(hops: &[Event], status: Option<u16>, direct: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let routers: Vec<_> = hops
        .iter()
        .filter_map(|h| match h {
            Event::Router(r) => Some(r.as_ref()),
            _ => None,
        })
        .collect();
    let machines: Vec<_> = hops
        .iter()
        .filter_map(|h| match h {
            Event::Machine(m) => Some(m),
            _ => None,
        })
        .collect();
    let apps: Vec<_> = hops
        .iter()
        .filter_map(|h| match h {
            Event::App(a) => Some(a),
            _ => None,
        })
        .collect();
    let control_plane = hops.iter().any(|h| matches!(h, Event::ControlPlane(_)));
    let edge_forwarded = hops
        .iter()
        .any(|h| matches!(h, Event::Edge(e) if e.decision == "forwarded to the OS router"));

    // 1. The app that answered was reached through its own machine's proxy.
    for a in &apps {
        let through: Vec<_> = machines.iter().filter(|m| m.machine == a.machine).collect();
        if through.is_empty() {
            let proxies: Vec<&str> = machines.iter().map(|m| m.machine.as_str()).collect();
            out.push(format!(
                "app {}:{} answered, but no proxy of machine {} forwarded to it (machine proxies: {})",
                a.machine,
                a.port,
                a.machine,
                if proxies.is_empty() {
                    "none".to_string()
                } else {
                    proxies.join(", ")
                }
            ));
        } else if !through.iter().any(|m| m.target_port == Some(a.port)) {
            out.push(format!(
                "app {}:{} answered, but machine {}'s proxy chose port {}",
                a.machine,
                a.port,
                a.machine,
                through
                    .iter()
                    .map(|m| m.target_port.map_or("none".to_string(), |p| p.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    // 2. Straight to a machine: that machine.
    if let Some(d) = direct {
        for m in &machines {
            if m.machine != d {
                out.push(format!(
                    "the request was sent straight to {d}, but machine {}'s proxy received it",
                    m.machine
                ));
            }
        }
    }

    if let [r] = routers.as_slice() {
        let followed = !r.redirects_followed.is_empty();
        // 2. The machine the router chose.
        if let (Some(chosen), Some(_)) = (&r.machine, &r.provider_url) {
            let wrong: Vec<&str> = machines
                .iter()
                .filter(|m| m.machine != chosen.id)
                .map(|m| m.machine.as_str())
                .collect();
            let right = machines.len() - wrong.len();
            // After a redirect the worker followed, a later request may go anywhere.
            let excused = followed && right > 0;
            if !wrong.is_empty() && !excused {
                out.push(format!(
                    "the router chose machine {}, but the request reached machine {}",
                    chosen.id,
                    wrong.join(", ")
                ));
            }
        }
        // 3. The target header, and the port.
        if let Some(sent) = &r.target_header {
            for m in &machines {
                if m.target_header.as_deref() != Some(sent.as_str()) {
                    out.push(format!(
                        "the router sent X-Iterate-Proxy-Target-Host: {sent}, but machine {}'s proxy received {}",
                        m.machine,
                        m.target_header.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
        if let Some(p) = &r.parsed {
            // V5+ may mean another port than the hostname's (the project's `defaultPort`): the
            // port the router meant is its effective port then.
            let meant = r
                .effective_port
                .as_deref()
                .and_then(|e| e.split(' ').next())
                .and_then(|n| n.parse::<u16>().ok());
            let (port_meant, how) = match meant {
                Some(e) => (e, "meant port"),
                None => (p.target_port, "parsed port"),
            };
            for m in &machines {
                if let Some(port) = m.target_port
                    && port != port_meant
                {
                    out.push(format!(
                        "the router {how} {port_meant} from the hostname, but machine {}'s proxy chose port {port}",
                        m.machine
                    ));
                }
            }
        }
        // 4. Not forwarded: no machine.
        if r.provider_url.is_none() {
            for m in &machines {
                out.push(format!(
                    "the router did not forward the request ({}), yet machine {}'s proxy received it",
                    if r.outcome.is_empty() {
                        "no outcome"
                    } else {
                        r.outcome.as_str()
                    },
                    m.machine
                ));
            }
        }
        // 5. Statuses passed on.
        if r.outcome == "forwarded"
            && !followed
            && r.status != 0
            && let [m] = machines.as_slice()
            && m.status != r.status
        {
            out.push(format!(
                "machine {}'s proxy answered {}, but the router passed on {}",
                m.machine, m.status, r.status
            ));
        }
        if edge_forwarded
            && !control_plane
            && r.status != 0
            && let Some(s) = status
            && s != r.status
        {
            out.push(format!(
                "the router answered {}, but the client got {s}",
                r.status
            ));
        }
    }
    // 4. The control plane answered: no machine.
    if control_plane {
        for m in &machines {
            out.push(format!(
                "the control plane answered, yet machine {}'s proxy received the request",
                m.machine
            ));
        }
    }
    out
}
