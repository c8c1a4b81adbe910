//! What the benchmarks share: an in-process `HttpClient` that answers from a function, so a
//! benchmark's peers (an issuer's JWKS, a workflow API) cost no socket, and the claims of the
//! tokens their issuer signs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};

use stepgate::http_client::{HttpClient, HttpError};

/// The runtime stepgate uses on one CPU (`current_thread`), with I/O and time.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The benchmarks' issuer (answered in process; the name never resolves).
pub const ISSUER: &str = "https://issuer.bench.invalid";

/// A token's claims for audience `aud`: issued by [`ISSUER`] now, valid for an hour, with
/// `extra`'s members added.
pub fn claims(aud: &str, extra: serde_json::Value) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = serde_json::json!({
        "iss": ISSUER, "aud": aud, "iat": now, "nbf": now, "exp": now + 3600,
    });
    if let (Some(c), serde_json::Value::Object(extra)) = (claims.as_object_mut(), extra) {
        c.extend(extra);
    }
    claims
}

/// Answers each request with `200` and the body the function gives for it.
pub struct Canned<F>(pub F);

impl<F> HttpClient for Canned<F>
where
    F: Fn(&Request<Bytes>) -> Bytes + Send + Sync,
{
    fn send(
        &self,
        req: Request<Bytes>,
        _: Duration,
    ) -> BoxFuture<'_, Result<Response<Bytes>, HttpError>> {
        let body = (self.0)(&req);
        Box::pin(async move { Ok(Response::new(body)) })
    }
}
