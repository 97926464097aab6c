//! Authentication (V1+): the session the worker's middleware found (Better Auth's `getSession`).

use crate::model::{Code, Refusal};
use crate::platform::SessionRow;
use crate::trace::RouterEvent;

/// Records whose session the router sees (`none` without one).
pub fn seen(session: Option<&SessionRow>, ev: &mut RouterEvent) {
    ev.user = Some(match session {
        Some(s) => s.user.id.clone(),
        None => "none".into(),
    });
}

/// Step (V1): a session is required, else `401 unauthorized`.
pub fn required<'s>(
    session: Option<&'s SessionRow>,
    ev: &mut RouterEvent,
) -> Result<&'s SessionRow, Refusal> {
    seen(session, ev);
    session.ok_or_else(|| Code::Unauthorized.into())
}
