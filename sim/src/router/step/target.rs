//! The target header the router sends to the machine proxy (`X-Iterate-Proxy-Target-Host`).

use crate::trace::RouterEvent;

pub const TARGET_HEADER: &str = "x-iterate-proxy-target-host";

/// Step (V0): the URL hostname; the machine proxy reads the `<port>__` prefix. Recorded.
pub fn hostname(ev: &mut RouterEvent) -> String {
    ev.target_header = Some(ev.hostname.clone());
    ev.hostname.clone()
}
