//! The platform's records: projects and machines (with their current states), in world-file
//! order; users, organizations and memberships; sessions and Better Auth's `verification` rows
//! (one-time tokens); and the world's clock. Every lookup the router, the control plane (and the
//! providers' view of a machine's state) makes goes through here; the mutable records are
//! private, changed only through these methods (the `machine_state` and `clock` faults, sign-in,
//! token issue and exchange).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use crate::model::{
    FaultError, MachineSpec, MachineState, MembershipSpec, OrganizationSpec, ProjectSpec,
    SessionSpec, UserSpec,
};

/// The world's clock starts here: 2026-01-01T00:00:00Z, in Unix seconds.
pub const CLOCK_START: u64 = 1_767_225_600;
/// Better Auth's default session lifetime (7 days).
pub const SESSION_TTL_S: u64 = 7 * 24 * 3600;

pub struct Platform {
    projects: Vec<ProjectSpec>,
    /// In world-file order (the order "first active machine" uses).
    machines: Vec<MachineSpec>,
    states: RwLock<HashMap<String, MachineState>>,
    users: Vec<UserSpec>,
    organizations: Vec<OrganizationSpec>,
    memberships: Vec<MembershipSpec>,
    auth: Mutex<AuthTables>,
}

/// The people a platform knows, as a world file lists them.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub users: Vec<UserSpec>,
    pub organizations: Vec<OrganizationSpec>,
    pub memberships: Vec<MembershipSpec>,
    pub sessions: Vec<SessionSpec>,
}

#[derive(Default)]
struct AuthTables {
    /// Seconds since [`CLOCK_START`].
    clock: u64,
    /// Session token → (user id, expires at).
    sessions: HashMap<String, (String, u64)>,
    /// `verification` rows: identifier → (value, expires at).
    verifications: HashMap<String, (String, u64)>,
    /// Counters for the ids this platform hands out (`sess-0001`, `ott-0001`).
    issued: HashMap<&'static str, u32>,
}

impl AuthTables {
    fn next_id(&mut self, prefix: &'static str) -> String {
        let n = self.issued.entry(prefix).or_default();
        *n += 1;
        format!("{prefix}-{n:04}")
    }
}

/// A session found by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub token: String,
    pub user: UserSpec,
}

/// A `verification` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRow {
    pub value: String,
    pub expires_at: u64,
}

/// A machine's row: its record and its state now.
#[derive(Debug, Clone, Copy)]
pub struct MachineRow<'a> {
    pub spec: &'a MachineSpec,
    pub state: MachineState,
}

impl Platform {
    pub fn new(projects: Vec<ProjectSpec>, machines: Vec<MachineSpec>) -> Platform {
        Platform::with_accounts(projects, machines, Accounts::default())
    }

    pub fn with_accounts(
        projects: Vec<ProjectSpec>,
        machines: Vec<MachineSpec>,
        accounts: Accounts,
    ) -> Platform {
        let states = machines.iter().map(|m| (m.id.clone(), m.state)).collect();
        let mut auth = AuthTables::default();
        for s in &accounts.sessions {
            auth.sessions.insert(
                s.token.clone(),
                (s.user.clone(), CLOCK_START + SESSION_TTL_S),
            );
        }
        Platform {
            projects,
            machines,
            states: RwLock::new(states),
            users: accounts.users,
            organizations: accounts.organizations,
            memberships: accounts.memberships,
            auth: Mutex::new(auth),
        }
    }

    fn auth(&self) -> std::sync::MutexGuard<'_, AuthTables> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clock now, in Unix seconds.
    pub fn now(&self) -> u64 {
        CLOCK_START + self.auth().clock
    }

    /// The `clock` fault: time moves forward.
    pub fn advance_clock(&self, seconds: u64) {
        self.auth().clock += seconds;
    }

    pub fn user(&self, id: &str) -> Option<&UserSpec> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn organization(&self, id: &str) -> Option<&OrganizationSpec> {
        self.organizations.iter().find(|o| o.id == id)
    }

    /// Whether the user is a member of the organization.
    pub fn is_member(&self, user: &str, organization: &str) -> bool {
        self.memberships
            .iter()
            .any(|m| m.user == user && m.organization == organization)
    }

    /// The session with this token, if it exists and has not expired.
    pub fn session(&self, token: &str) -> Option<SessionRow> {
        let now = self.now();
        let (user, expires) = self.auth().sessions.get(token).cloned()?;
        if expires < now {
            return None;
        }
        Some(SessionRow {
            token: token.to_string(),
            user: self.user(&user)?.clone(),
        })
    }

    /// Signs a user in: a new session (`sess-NNNN`), valid for [`SESSION_TTL_S`].
    pub fn create_session(&self, user: &str) -> Option<SessionRow> {
        let user = self.user(user)?.clone();
        let now = self.now();
        let mut a = self.auth();
        let token = a.next_id("sess");
        a.sessions
            .insert(token.clone(), (user.id.clone(), now + SESSION_TTL_S));
        Some(SessionRow { token, user })
    }

    /// A fresh one-time token value (`ott-NNNN`).
    pub fn new_token(&self) -> String {
        self.auth().next_id("ott")
    }

    /// `INSERT INTO verification`.
    pub fn insert_verification(&self, identifier: &str, value: &str, expires_at: u64) {
        self.auth()
            .verifications
            .insert(identifier.to_string(), (value.to_string(), expires_at));
    }

    /// `SELECT … FROM verification WHERE identifier = $1`.
    pub fn find_verification(&self, identifier: &str) -> Option<VerificationRow> {
        let (value, expires_at) = self.auth().verifications.get(identifier).cloned()?;
        Some(VerificationRow { value, expires_at })
    }

    /// `DELETE FROM verification WHERE identifier = $1` (how many rows it deleted).
    pub fn delete_verification(&self, identifier: &str) -> usize {
        usize::from(self.auth().verifications.remove(identifier).is_some())
    }

    /// `DELETE FROM verification WHERE identifier = $1 AND expires_at >= now() RETURNING *`: one
    /// statement, so of two concurrent callers at most one gets the row.
    pub fn delete_verification_returning(&self, identifier: &str) -> Option<VerificationRow> {
        let now = self.now();
        let mut a = self.auth();
        match a.verifications.get(identifier) {
            Some((_, exp)) if *exp >= now => {
                let (value, expires_at) = a.verifications.remove(identifier)?;
                Some(VerificationRow { value, expires_at })
            }
            _ => None,
        }
    }

    /// Every project, in world-file order (the database's `project` table).
    pub fn projects(&self) -> &[ProjectSpec] {
        &self.projects
    }

    /// The machines' records, in world-file order, with their states now.
    pub fn machines(&self) -> Vec<MachineRow<'_>> {
        self.machines
            .iter()
            .filter_map(|spec| {
                Some(MachineRow {
                    spec,
                    state: self.machine_state(&spec.id)?,
                })
            })
            .collect()
    }

    /// A machine's record as it was read earlier (a cached row): its spec with that state.
    pub fn machine_as(&self, id: &str, state: MachineState) -> Option<MachineRow<'_>> {
        let spec = self.machines.iter().find(|m| m.id == id)?;
        Some(MachineRow { spec, state })
    }

    /// The project with this slug.
    pub fn project(&self, slug: &str) -> Option<&ProjectSpec> {
        self.projects.iter().find(|p| p.slug == slug)
    }

    /// The machine's current state.
    pub fn machine_state(&self, id: &str) -> Option<MachineState> {
        self.states.read().ok()?.get(id).copied()
    }

    /// The machine with this id.
    pub fn machine(&self, id: &str) -> Option<MachineRow<'_>> {
        let spec = self.machines.iter().find(|m| m.id == id)?;
        Some(MachineRow {
            spec,
            state: self.machine_state(id)?,
        })
    }

    /// The project's first machine (in world order) whose state passes `wanted`.
    pub fn first_machine_of_project(
        &self,
        project: &str,
        wanted: impl Fn(MachineState) -> bool,
    ) -> Option<MachineRow<'_>> {
        self.machines.iter().find_map(|spec| {
            let state = self.machine_state(&spec.id)?;
            (spec.project == project && wanted(state)).then_some(MachineRow { spec, state })
        })
    }

    /// The `machine_state` fault: the platform's record of the machine changes state.
    pub fn set_state(&self, id: &str, state: MachineState) -> Result<(), FaultError> {
        if !self.machines.iter().any(|m| m.id == id) {
            return Err(FaultError::UnknownMachine(id.into()));
        }
        if let Ok(mut s) = self.states.write() {
            s.insert(id.to_string(), state);
        }
        Ok(())
    }
}
