//! A refusal by the OS router: a status, a stable error code and the details that later
//! generations put in their envelope. It is rendered in one place (see [`Refusal::body`]).

use http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::ParseError;

/// The router's error codes (docs/behaviour.md §3), each with its one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// No host matchers configured.
    IngressNotConfigured,
    /// The host is not an ingress host.
    NotFound,
    InvalidHostname,
    InvalidPort,
    MachineNotFound,
    /// The machine has no external id.
    MachineUnavailable,
    /// The transport to the machine failed.
    ProxyError,
    /// V1+: the host's first label is not a valid project slug.
    InvalidProjectSlug,
    /// V1+: no session.
    Unauthorized,
    /// V1+: the user is not a member of the project's organization (and not an admin).
    Forbidden,
    /// V1+: no project with this slug.
    ProjectNotFound,
    /// V1+: the machine's state is not routable.
    MachineNotRoutable,
    /// V4+: the host is not under the project's custom domain.
    NotCustomDomain,
    /// V4+: the part before the custom domain names no target.
    InvalidSubdomain,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::IngressNotConfigured => "ingress_not_configured",
            Code::NotFound => "not_found",
            Code::InvalidHostname => "invalid_hostname",
            Code::InvalidPort => "invalid_port",
            Code::MachineNotFound => "machine_not_found",
            Code::MachineUnavailable => "machine_unavailable",
            Code::ProxyError => "proxy_error",
            Code::InvalidProjectSlug => "invalid_project_slug",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::ProjectNotFound => "project_not_found",
            Code::MachineNotRoutable => "machine_not_routable",
            Code::NotCustomDomain => "not_custom_domain",
            Code::InvalidSubdomain => "invalid_subdomain",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::IngressNotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
            Code::NotFound | Code::MachineNotFound | Code::ProjectNotFound => StatusCode::NOT_FOUND,
            Code::InvalidHostname
            | Code::InvalidPort
            | Code::InvalidProjectSlug
            | Code::NotCustomDomain
            | Code::InvalidSubdomain => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::MachineNotRoutable => StatusCode::CONFLICT,
            Code::MachineUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::ProxyError => StatusCode::BAD_GATEWAY,
        }
    }
}

impl From<ParseError> for Code {
    fn from(e: ParseError) -> Code {
        match e {
            ParseError::InvalidHostname => Code::InvalidHostname,
            ParseError::InvalidPort => Code::InvalidPort,
            ParseError::InvalidProjectSlug => Code::InvalidProjectSlug,
        }
    }
}

/// What a refusal says beyond its code. V0 shows none of it in its body (the trace shows
/// `proxy_error`); V1+ render it as the envelope's `details` (docs/behaviour.md §3.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname_labels: Option<Vec<String>>,
    /// V1–V2: the configured host matchers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_matchers: Option<Vec<String>>,
    /// V1–V2: the matcher that covered the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_host_matcher: Option<String>,
    /// V3+: `PROJECT_INGRESS_DOMAIN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_ingress_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parsed_target: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parsed_target_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<serde_json::Value>,
    /// The transport's error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_error: Option<String>,
}

/// The shape of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `{"error":"<code>"}` (V0).
    Code,
    /// `{"error":"<code>","details":{…}}` (V1+).
    CodeAndDetails,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: Code,
    /// Boxed: a refusal travels as the `Err` of every step.
    pub details: Box<Details>,
}

impl Refusal {
    pub fn new(code: Code) -> Refusal {
        Refusal {
            code,
            details: Box::default(),
        }
    }

    /// `502 proxy_error` with the transport's message.
    pub fn proxy_error(message: impl Into<String>) -> Refusal {
        Refusal {
            code: Code::ProxyError,
            details: Box::new(Details {
                proxy_error: Some(message.into()),
                ..Details::default()
            }),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// The JSON body in `envelope`'s shape.
    pub fn body(&self, envelope: Envelope) -> serde_json::Value {
        match envelope {
            Envelope::Code => json!({"error": self.code.as_str()}),
            Envelope::CodeAndDetails => {
                json!({"error": self.code.as_str(), "details": self.details})
            }
        }
    }
}

impl Refusal {
    /// A refusal with a `resolution` in its details.
    pub fn resolution(code: Code, resolution: serde_json::Value) -> Refusal {
        Refusal {
            code,
            details: Box::new(Details {
                resolution: Some(resolution),
                ..Details::default()
            }),
        }
    }
}

impl From<Code> for Refusal {
    fn from(code: Code) -> Refusal {
        Refusal::new(code)
    }
}

impl From<ParseError> for Refusal {
    fn from(e: ParseError) -> Refusal {
        Refusal {
            code: e.into(),
            details: Box::new(Details {
                parsed_target_error: Some(e.to_string()),
                ..Details::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let r = Refusal::proxy_error("connect ECONNREFUSED 127.0.0.1:1");
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.body(Envelope::Code), json!({"error": "proxy_error"}));
        assert_eq!(
            r.body(Envelope::CodeAndDetails),
            json!({"error": "proxy_error", "details": {"proxyError": "connect ECONNREFUSED 127.0.0.1:1"}})
        );
        let r = Refusal::from(ParseError::InvalidPort);
        assert_eq!(
            (r.status(), r.code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_port")
        );
    }
}
