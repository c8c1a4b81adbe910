//! The only map from results to HTTP responses: JSON bodies, `X-Request-Id` on every
//! response, `WWW-Authenticate` on 401, `Retry-After` on 429.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use crate::error::Error;

/// The response body type.
pub type Body = Full<Bytes>;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value, request_id: &str) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json_bytes(status, Bytes::from(body), request_id)
}

/// A JSON response whose body is already JSON text.
pub fn json_bytes(status: StatusCode, body: Bytes, request_id: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_request_id(&mut r, request_id);
    r
}

/// A plain-text response (health, metrics).
pub fn text(
    status: StatusCode,
    body: String,
    content_type: &'static str,
    request_id: &str,
) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    set_request_id(&mut r, request_id);
    r
}

/// Sets `X-Request-Id`.
pub fn set_request_id(r: &mut Response<Body>, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert(REQUEST_ID, v);
    }
}

/// An error as the contract's JSON body.
pub fn error(e: &Error, request_id: &str) -> Response<Body> {
    let status = e.status();
    let message = e.message();
    let mut r = json(
        status,
        &json!({"error": {"code": e.code(), "message": message, "request_id": request_id}}),
        request_id,
    );
    if status == StatusCode::UNAUTHORIZED {
        let desc = message.replace(['"', '\\'], "");
        if let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{desc}\""
        )) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    if let Error::RateLimited(after) = e {
        let secs = after.as_secs().max(1);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// An error in the AWS JSON protocol's shape (`{"__type", "message"}`, `X-Amzn-ErrorType`), for
/// SDKs pointed at `/aws/states`. Upstream errors keep the upstream's own code and status.
pub fn aws_error(e: &Error, request_id: &str) -> Response<Body> {
    use crate::forward::UpstreamError;
    let (status, code) = match e {
        Error::Upstream(UpstreamError::Answered { status, code, .. }) => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            code.clone(),
        ),
        other => {
            let code = match other.status().as_u16() {
                401 => "UnrecognizedClientException",
                403 => "AccessDeniedException",
                404 => "ResourceNotFound",
                409 => "ExecutionAlreadyExists",
                429 => "ThrottlingException",
                400 | 413 => "ValidationException",
                _ => "ServiceUnavailable",
            };
            let status = match other.status().as_u16() {
                s @ (401..=499) if s != 401 && s != 403 => StatusCode::BAD_REQUEST,
                s => StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            };
            (status, code.to_string())
        }
    };
    let message = match e {
        Error::Upstream(UpstreamError::Answered { message, .. }) => message.clone(),
        other => other.message(),
    };
    let mut r = json(
        status,
        &json!({"__type": code, "message": message}),
        request_id,
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(v) = HeaderValue::from_str(&code) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    r
}

/// Whether a caller-sent request id is acceptable: 1-128 of `[A-Za-z0-9._:-]`.
pub fn well_formed_request_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::AuthnError;

    #[test]
    fn unauthenticated_has_www_authenticate_and_json() {
        let r = error(&Error::Unauthenticated(AuthnError::Expired), "rid-1");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );
        assert_eq!(r.headers()[REQUEST_ID], "rid-1");
    }

    #[test]
    fn request_ids() {
        assert!(well_formed_request_id("abc-123"));
        assert!(!well_formed_request_id(""));
        assert!(!well_formed_request_id("a b"));
        assert!(!well_formed_request_id(&"a".repeat(129)));
    }
}
