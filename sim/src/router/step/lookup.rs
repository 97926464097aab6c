//! The queries V4+ issue to the platform database (`crate::db`), each named after what it reads
//! and the function that issues it. The V5 custom-domain query is the reference's own SQL; the
//! others are our reading of the Drizzle queries behind `resolveMachineForIngress` (a project by
//! slug joined with its organization and the user's membership; its first active machine; a
//! machine by id joined the same way).

use crate::db::{Database, DbError, Query, like};
use crate::model::{MachineState, ProjectSpec};

/// The database and the request its events belong to.
#[derive(Clone, Copy)]
pub struct Db<'a> {
    pub db: &'a Database,
    pub trace_id: Option<&'a str>,
}

fn project_line(p: &ProjectSpec) -> String {
    let mut l = format!("project {}", p.slug);
    if let Some(d) = &p.custom_domain {
        l.push_str(&format!(" customDomain={d}"));
    }
    if let Some(port) = p.default_port {
        l.push_str(&format!(" defaultPort={port}"));
    }
    l
}

/// V4 `shouldHandleProjectIngressHostname` / `handleCustomDomainRequest`: every project with a
/// custom domain (the caller keeps the first that matches, B4).
pub async fn projects_with_custom_domain(
    db: Db<'_>,
    caller: &str,
) -> Result<Vec<ProjectSpec>, DbError> {
    let q = Query {
        name: "getProjectsWithCustomDomain",
        caller,
        sql: "SELECT * FROM project WHERE custom_domain IS NOT NULL",
        params: vec![],
    };
    db.db
        .query(q, db.trace_id, |p| {
            let rows: Vec<ProjectSpec> = p
                .projects()
                .iter()
                .filter(|p| p.custom_domain.is_some())
                .cloned()
                .collect();
            let lines = rows.iter().map(project_line).collect();
            (rows, lines)
        })
        .await
}

/// V5 `shouldHandleProjectIngressHostname`: the one project whose custom domain is the host or a
/// suffix of it, the longest first. `=` and `LIKE` are Postgres's: case-sensitive, and `_` in a
/// custom domain matches any character.
pub async fn project_by_custom_domain(
    db: Db<'_>,
    host: &str,
) -> Result<Option<ProjectSpec>, DbError> {
    let q = Query {
        name: "getProjectByCustomDomain",
        caller: "shouldHandleProjectIngressHostname",
        sql: "SELECT * FROM project WHERE custom_domain = $1 OR $1 LIKE '%.' || custom_domain ORDER BY length(custom_domain) DESC LIMIT 1",
        params: vec![host.to_string()],
    };
    db.db
        .query(q, db.trace_id, |p| {
            let mut hits: Vec<&ProjectSpec> = p
                .projects()
                .iter()
                .filter(|p| {
                    p.custom_domain
                        .as_deref()
                        .is_some_and(|d| d == host || like(host, &format!("%.{d}")))
                })
                .collect();
            // ORDER BY length DESC (stable: ties keep table order) LIMIT 1.
            hits.sort_by_key(|p| {
                std::cmp::Reverse(p.custom_domain.as_ref().map_or(0, String::len))
            });
            let row = hits.first().map(|p| (*p).clone());
            let lines = row.iter().map(project_line).collect();
            (row, lines)
        })
        .await
}

/// A project with the user's membership.
#[derive(Debug, Clone)]
pub struct ProjectAccess {
    pub project: ProjectSpec,
    /// The user is a member of the project's organization.
    pub member: bool,
}

/// `resolveMachineForIngress`, project target: the project by slug, its organization and the
/// user's membership.
pub async fn project_with_membership(
    db: Db<'_>,
    slug: &str,
    user: &str,
) -> Result<Option<ProjectAccess>, DbError> {
    let q = Query {
        name: "getProjectWithMembership",
        caller: "resolveMachineForIngress",
        sql: "SELECT project.*, organization.id, member.role FROM project JOIN organization ON organization.id = project.organization_id LEFT JOIN member ON member.organization_id = organization.id AND member.user_id = $2 WHERE project.slug = $1 LIMIT 1",
        params: vec![slug.to_string(), user.to_string()],
    };
    db.db
        .query(q, db.trace_id, |p| {
            let row = p.project(slug).map(|pr| ProjectAccess {
                member: pr
                    .organization
                    .as_deref()
                    .is_some_and(|o| p.is_member(user, o)),
                project: pr.clone(),
            });
            let lines = row
                .iter()
                .map(|r| {
                    format!(
                        "{} organization={} member={}",
                        project_line(&r.project),
                        r.project.organization.as_deref().unwrap_or("null"),
                        if r.member { "yes" } else { "null" }
                    )
                })
                .collect();
            (row, lines)
        })
        .await
}

/// `resolveMachineForIngress`, project target: the project's first `active` machine (id and
/// state).
pub async fn active_machine_of_project(
    db: Db<'_>,
    slug: &str,
) -> Result<Option<(String, MachineState)>, DbError> {
    let q = Query {
        name: "getActiveMachineForProject",
        caller: "resolveMachineForIngress",
        sql: "SELECT * FROM machine WHERE project_id = $1 AND state = 'active' ORDER BY created_at LIMIT 1",
        params: vec![slug.to_string()],
    };
    db.db
        .query(q, db.trace_id, |p| {
            let row = p
                .first_machine_of_project(slug, |s| s == MachineState::Active)
                .map(|m| (m.spec.id.clone(), m.state));
            let lines = row
                .iter()
                .map(|(id, st)| format!("machine {id} state={}", st.as_str()))
                .collect();
            (row, lines)
        })
        .await
}

/// A machine with its project and the user's membership.
#[derive(Debug, Clone)]
pub struct MachineAccess {
    pub id: String,
    pub state: MachineState,
    pub project: ProjectSpec,
    pub member: bool,
}

/// `resolveMachineForIngress`, machine target: the machine by id, its project, organization and
/// the user's membership.
pub async fn machine_with_membership(
    db: Db<'_>,
    id: &str,
    user: &str,
) -> Result<Option<MachineAccess>, DbError> {
    let q = Query {
        name: "getMachineWithMembership",
        caller: "resolveMachineForIngress",
        sql: "SELECT machine.*, project.*, organization.id, member.role FROM machine JOIN project ON project.id = machine.project_id JOIN organization ON organization.id = project.organization_id LEFT JOIN member ON member.organization_id = organization.id AND member.user_id = $2 WHERE machine.id = $1 LIMIT 1",
        params: vec![id.to_string(), user.to_string()],
    };
    db.db
        .query(q, db.trace_id, |p| {
            let row = p.machine(id).and_then(|m| {
                let project = p.project(&m.spec.project)?.clone();
                Some(MachineAccess {
                    id: m.spec.id.clone(),
                    state: m.state,
                    member: project
                        .organization
                        .as_deref()
                        .is_some_and(|o| p.is_member(user, o)),
                    project,
                })
            });
            let lines = row
                .iter()
                .map(|m| {
                    format!(
                        "machine {} state={} {} member={}",
                        m.id,
                        m.state.as_str(),
                        project_line(&m.project),
                        if m.member { "yes" } else { "null" }
                    )
                })
                .collect();
            (row, lines)
        })
        .await
}
