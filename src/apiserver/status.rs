//! Every error the API server can answer with, and the one place that turns it into an
//! upstream-shaped `metav1.Status` (code, reason, message, details).

use serde_json::{Value, json};

/// A failed request, as upstream's `StatusError` classifies it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    NotFound {
        message: String,
        details: Option<Details>,
    },
    #[error("{message}")]
    AlreadyExists { message: String, details: Details },
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<Details>,
    },
    /// Server-side apply conflicts: 409 with `FieldManagerConflict` causes.
    #[error("{message}")]
    ApplyConflict {
        message: String,
        details: Details,
        causes: Vec<Cause>,
    },
    #[error("{message}")]
    Invalid {
        message: String,
        details: Details,
        causes: Vec<Cause>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    Forbidden {
        message: String,
        details: Option<Details>,
    },
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RequestEntityTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Timeout(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// A status relayed from another server (a kubelet), shaped as upstream's
    /// `NewGenericServerResponse`; an empty reason for errors that were not Statuses at all.
    #[error("{message}")]
    Relayed {
        code: u16,
        reason: &'static str,
        message: String,
        details: Option<Details>,
    },
}

/// `Status.details`: what the error is about.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: String,
    pub group: String,
    /// The resource (plural) for most reasons, the Kind for `Invalid`, as upstream.
    pub kind: String,
}

/// One `details.causes` entry.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Details {
    pub fn new(group: &str, kind: &str, name: &str) -> Self {
        Self {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
        }
    }
}

/// `pods "x"` or `deployments.apps "x"`.
fn named(qualified: &str, name: &str) -> String {
    format!("{qualified} \"{name}\"")
}

impl ApiError {
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let q = qualify(group, plural);
        ApiError::NotFound {
            message: format!("{} not found", named(&q, name)),
            details: Some(Details::new(group, plural, name)),
        }
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let q = qualify(group, plural);
        ApiError::AlreadyExists {
            message: format!("{} already exists", named(&q, name)),
            details: Details::new(group, plural, name),
        }
    }

    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        let q = qualify(group, plural);
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again",
                named(&q, name)
            ),
            details: Some(Details::new(group, plural, name)),
        }
    }

    pub fn conflict_msg(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let q = qualify(group, plural);
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {}: {why}",
                named(&q, name)
            ),
            details: Some(Details::new(group, plural, name)),
        }
    }

    /// 422 with causes: `The Pod "x" is invalid: <field>: <message>, …`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let gk = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let message = match list.len() {
            0 => format!("{gk} \"{name}\" is invalid"),
            1 => format!("{gk} \"{name}\" is invalid: {}", list[0]),
            _ => format!("{gk} \"{name}\" is invalid: [{}]", list.join(", ")),
        };
        ApiError::Invalid {
            message,
            details: Details::new(group, kind, name),
            causes,
        }
    }

    pub fn forbidden(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let q = qualify(group, plural);
        let message = if name.is_empty() {
            format!("{q} is forbidden: {why}")
        } else {
            format!("{} is forbidden: {why}", named(&q, name))
        };
        ApiError::Forbidden {
            message,
            details: Some(Details::new(group, plural, name)),
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden { .. } => 403,
            ApiError::Unauthorized => 401,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::RequestEntityTooLarge(_) => 413,
            ApiError::TooManyRequests(_) => 429,
            ApiError::Gone(_) => 410,
            ApiError::Timeout(_) => 504,
            ApiError::Internal(_) => 500,
            ApiError::Relayed { code, .. } => *code,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::TooManyRequests(_) => "TooManyRequests",
            ApiError::Gone(_) => "Expired",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Internal(_) => "InternalError",
            ApiError::Relayed { reason, .. } => reason,
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound { details, .. }
            | ApiError::Conflict { details, .. }
            | ApiError::Forbidden { details, .. }
            | ApiError::Relayed { details, .. } => details.as_ref().map(|d| details_json(d, &[])),
            ApiError::AlreadyExists { details, .. } => Some(details_json(details, &[])),
            ApiError::Invalid {
                details, causes, ..
            }
            | ApiError::ApplyConflict {
                details, causes, ..
            } => Some(details_json(details, causes)),
            ApiError::Internal(m) => Some(json!({"causes": [{"message": m}]})),
            ApiError::TooManyRequests(_) => Some(json!({"retryAfterSeconds": 1})),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        // Upstream omits an empty (unknown) reason.
        if self.reason().is_empty()
            && let Some(o) = status.as_object_mut()
        {
            o.remove("reason");
        }
        status
    }
}

fn details_json(d: &Details, causes: &[Cause]) -> Value {
    let mut v = json!({"name": d.name, "group": d.group, "kind": d.kind});
    if !causes.is_empty() {
        v["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
    }
    v
}

pub fn qualify(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

/// The `Status` a successful delete answers with.
pub fn success(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": plural, "uid": uid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_like_upstream() {
        let s = ApiError::not_found("apps", "deployments", "nosuch").to_status();
        assert_eq!(s["message"], "deployments.apps \"nosuch\" not found");
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_lists_causes() {
        let c = |f: &str| Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: f.into(),
        };
        let s = ApiError::invalid("", "Pod", "x", vec![c("spec.containers")]).to_status();
        assert_eq!(
            s["message"],
            "Pod \"x\" is invalid: spec.containers: Required value"
        );
        let s = ApiError::invalid("", "Pod", "x", vec![c("a"), c("b")]).to_status();
        assert_eq!(
            s["message"],
            "Pod \"x\" is invalid: [a: Required value, b: Required value]"
        );
        assert_eq!(s["details"]["causes"][1]["field"], "b");
    }
}
