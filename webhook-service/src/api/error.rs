//! The HTTP error body every route answers with: `{"error": {"field", "rule", "message"}}`.
//!
//! 422 for a field that breaks a rule, 400 for a body that is not the expected JSON, 401 for a
//! missing or bad API key, 404 for an id the caller does not own, 413 for a body over the
//! limit, 429 (with `Retry-After`) over a key's limits, 503 when the store or the inference
//! servers cannot answer.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::validate::FieldError;
use crate::auth::AuthError;
use crate::jobs::{AcceptError, JobError};

/// An HTTP error with a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    field: Option<String>,
    rule: Option<String>,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            field: None,
            rule: None,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// A 400 for a body that could not be read as the expected JSON.
    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A 422 for `field` breaking `rule`.
    pub fn field(field: impl Into<String>, rule: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            rule: rule.into(),
        }
        .into()
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message, for a person to read.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Reports a field under the name the caller used (vendor shapes name fields their way):
    /// a field named `from`, or under `from.`, is renamed.
    pub fn rename_field(mut self, from: &str, to: &str) -> Self {
        if let Some(field) = &self.field {
            let renamed = if field == from {
                Some(to.to_owned())
            } else {
                field
                    .strip_prefix(&format!("{from}."))
                    .map(|rest| format!("{to}.{rest}"))
            };
            if let Some(renamed) = renamed {
                self.message = self.message.replacen(field.as_str(), &renamed, 1);
                self.field = Some(renamed);
            }
        }
        self
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: e.to_string(),
            field: Some(e.field),
            rule: Some(e.rule),
            retry_after_s: None,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        // A body over the limit is rewritten to name the limit by the router's 413 handler.
        Self::new(e.status(), e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_body(e.body_text())
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(_) | JobError::DeliveryNotFound(_) => Self::not_found(e.to_string()),
            JobError::Forbidden(message) => Self::new(StatusCode::FORBIDDEN, message),
            JobError::Unavailable(message) => Self::new(StatusCode::SERVICE_UNAVAILABLE, message),
            JobError::Conflict(message) => Self::new(StatusCode::CONFLICT, message),
            JobError::Limited {
                message,
                retry_after_s,
            } => Self {
                retry_after_s: Some(retry_after_s),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
            },
            JobError::Store(err) => {
                tracing::error!(error = %err, "store error");
                Self {
                    retry_after_s: Some(1),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the job store is unavailable; try again",
                    )
                }
            }
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Invalid(field) => field.into(),
            AcceptError::Limited {
                rule,
                retry_after_s,
            } => Self {
                retry_after_s: Some(retry_after_s),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, rule)
            },
            AcceptError::Conflict(..) => Self {
                field: Some("idempotency_key".into()),
                rule: Some("must not be reused for a different request".into()),
                ..Self::new(StatusCode::CONFLICT, e.to_string())
            },
            AcceptError::Job(job) => job.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            AuthError::Missing | AuthError::Invalid => {
                Self::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"field": self.field, "rule": self.rule, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
