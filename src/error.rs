//! One error type for the request path: one variant per contract error code (DESIGN.md §4).
//! `respond.rs` is the only place it becomes HTTP.

use std::time::Duration;

use crate::authn::AuthnError;
use crate::authz::Denied;
use crate::forward::UpstreamError;
use crate::route::RouteError;

/// A request that ends early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 `invalid_input`.
    #[error("{0}")]
    InvalidInput(String),
    /// 401 `unauthenticated` (or 503 when the issuer's keys are unavailable).
    #[error(transparent)]
    Unauthenticated(AuthnError),
    /// 403 `forbidden`.
    #[error(transparent)]
    Forbidden(Denied),
    /// 404 `unknown_step`.
    #[error("step `{0}` is not configured")]
    UnknownStep(String),
    /// 404 `not_found` / 405 `method_not_allowed`.
    #[error(transparent)]
    Route(RouteError),
    /// 413 `body_too_large`.
    #[error("body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// 429 `rate_limited`.
    #[error("rate limit exceeded; retry in {0:?}")]
    RateLimited(Duration),
    /// 502 / 504 / 503 from the forward stage.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// 503 `unavailable`: audit log, policies or credentials unusable.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AuthnError> for Error {
    fn from(e: AuthnError) -> Self {
        Error::Unauthenticated(e)
    }
}

impl From<Denied> for Error {
    fn from(e: Denied) -> Self {
        Error::Forbidden(e)
    }
}

impl From<RouteError> for Error {
    fn from(e: RouteError) -> Self {
        Error::Route(e)
    }
}

impl From<UpstreamError> for Error {
    fn from(e: UpstreamError) -> Self {
        Error::Upstream(e)
    }
}

impl From<crate::validate::InvalidInput> for Error {
    fn from(e: crate::validate::InvalidInput) -> Self {
        Error::InvalidInput(e.0)
    }
}

impl From<crate::audit::AuditError> for Error {
    fn from(e: crate::audit::AuditError) -> Self {
        tracing::error!(message = "Audit log unusable; refusing the trigger.", error = %e);
        Error::Unavailable("audit log unavailable".into())
    }
}

impl From<crate::authz::AuthzError> for Error {
    fn from(e: crate::authz::AuthzError) -> Self {
        tracing::error!(message = "Authorization failed; refusing the request.", error = %e);
        Error::Unavailable("authorization unavailable".into())
    }
}

impl Error {
    /// HTTP status.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Error::InvalidInput(_) => S::BAD_REQUEST,
            Error::Unauthenticated(AuthnError::KeysUnavailable(_)) => S::SERVICE_UNAVAILABLE,
            Error::Unauthenticated(AuthnError::Internal(_)) => S::SERVICE_UNAVAILABLE,
            Error::Unauthenticated(_) => S::UNAUTHORIZED,
            Error::Forbidden(_) => S::FORBIDDEN,
            Error::UnknownStep(_) => S::NOT_FOUND,
            Error::Route(RouteError::NotFound(_)) => S::NOT_FOUND,
            Error::Route(RouteError::MethodNotAllowed { .. }) => S::METHOD_NOT_ALLOWED,
            Error::Route(RouteError::Denied(_)) => S::FORBIDDEN,
            Error::Route(RouteError::Malformed(_)) => S::BAD_REQUEST,
            Error::BodyTooLarge(_) => S::PAYLOAD_TOO_LARGE,
            Error::RateLimited(_) => S::TOO_MANY_REQUESTS,
            Error::Upstream(UpstreamError::Timeout(_)) => S::GATEWAY_TIMEOUT,
            Error::Upstream(UpstreamError::Credentials(_)) => S::SERVICE_UNAVAILABLE,
            Error::Upstream(UpstreamError::Conflict(_)) => S::CONFLICT,
            Error::Upstream(UpstreamError::NotOfStep(_)) => S::NOT_FOUND,
            Error::Upstream(_) => S::BAD_GATEWAY,
            Error::Unavailable(_) => S::SERVICE_UNAVAILABLE,
        }
    }

    /// Contract error code.
    pub fn code(&self) -> &'static str {
        match self.status().as_u16() {
            400 => "invalid_input",
            401 => "unauthenticated",
            403 => "forbidden",
            404 if matches!(self, Error::UnknownStep(_)) => "unknown_step",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "body_too_large",
            429 => "rate_limited",
            502 => "upstream_error",
            504 => "upstream_timeout",
            _ => "unavailable",
        }
    }

    /// Message for the caller: helpful, never a token, no internals.
    pub fn message(&self) -> String {
        match self {
            Error::Unauthenticated(e) if self.status() == http::StatusCode::SERVICE_UNAVAILABLE => {
                tracing::error!(message = "Cannot verify tokens.", error = %e);
                "identity provider unavailable".into()
            }
            Error::Unauthenticated(e) => e.description(),
            Error::Upstream(UpstreamError::Credentials(e)) => {
                tracing::error!(message = "Credentials unavailable.", error = %e);
                "upstream credentials unavailable".into()
            }
            other => other.to_string(),
        }
    }

    /// The reason written to the audit record.
    pub fn audit_reason(&self) -> Vec<String> {
        match self {
            Error::Forbidden(d) => d.reasons.clone(),
            Error::Unauthenticated(e) => vec![format!("unauthenticated: {}", e.description())],
            Error::Upstream(e) => vec![format!("{}: {e}", self.code())],
            other => vec![format!("{}: {}", other.code(), other.message())],
        }
    }
}
