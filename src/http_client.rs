//! The outbound HTTP seam: discovery, JWKS and upstream calls go through `HttpClient`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;

mod pool;
#[cfg(test)]
mod tests;

use pool::{Key, Pool, SendError};

/// Largest response body stepgate reads from any peer (JWKS, discovery, workflow APIs).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most outbound calls in flight at once; more wait for a turn (within their deadline). Each
/// call holds a pooled connection with its buffers and task, so this bounds the connections
/// and memory a flood of callers can make stepgate open (at ~100 ms per workflow API call it
/// still allows a few thousand calls a second, above the workflow APIs' own start quotas).
pub const MAX_IN_FLIGHT: usize = 256;
/// Idle connections kept per host (nginx's `keepalive 64` of its upstream blocks).
const MAX_IDLE_PER_HOST: usize = 64;
/// An idle connection unused this long is closed rather than used (peers close theirs after
/// about as long; AWS's endpoints after 60 s or more).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an outbound call failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting or exchanging the request failed.
    #[error("request to `{host}` failed: {detail}")]
    Transport {
        /// Host of the peer.
        host: String,
        /// What the transport said.
        detail: String,
    },
    /// The peer did not answer within the deadline.
    #[error("request to `{host}` timed out after {after:?}")]
    Timeout {
        /// Host of the peer.
        host: String,
        /// The deadline.
        after: Duration,
    },
    /// The response body was larger than [`MAX_RESPONSE_BYTES`].
    #[error("response from `{host}` is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge {
        /// Host of the peer.
        host: String,
    },
}

/// Sends one request and reads the whole (bounded) response.
pub trait HttpClient: Send + Sync {
    /// Sends `req`, giving up after `timeout`.
    fn send(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response<Bytes>, HttpError>>;
}

/// Shared client handle.
pub type SharedHttpClient = Arc<dyn HttpClient>;

/// The real client: hyper over rustls (HTTP/1.1 and HTTP/2 by ALPN), pooled keep-alive.
pub struct HyperClient {
    pool: Arc<Pool>,
    in_flight: tokio::sync::Semaphore,
}

impl HyperClient {
    /// Builds the client with the system's root certificates.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> std::io::Result<Self> {
        let tls =
            hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider)?;
        Ok(Self::with_connector(connector(tls), IDLE_TIMEOUT))
    }

    fn with_connector(connector: pool::Connector, idle_timeout: Duration) -> Self {
        Self {
            pool: Pool::new(connector, idle_timeout, MAX_IDLE_PER_HOST),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// One exchange: a pooled connection if one is idle, else a new one. A request that a
    /// pooled connection turned away unsent (the peer had closed it meanwhile) is sent again on
    /// another; one that may have reached the peer is not (a start is not idempotent).
    async fn exchange(&self, key: &Key, req: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let transport = |detail: String| HttpError::Transport {
            host: key.host().to_string(),
            detail,
        };
        let _turn = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| transport(e.to_string()))?;
        let mut req = req.map(Full::new);
        let (conn, resp) = loop {
            let (mut conn, reused) = match self.pool.checkout(key) {
                Some(conn) => (conn, true),
                None => {
                    let conn = self
                        .pool
                        .connect(key)
                        .await
                        .map_err(|e| transport(error_chain(e.as_ref())))?;
                    (conn, false)
                }
            };
            match conn.send(req).await {
                Ok(resp) => break (conn, resp),
                Err(SendError::Unsent(unsent, e)) if reused => {
                    tracing::debug!(message = "Pooled upstream connection was closed; sending again.", error = %e);
                    req = *unsent;
                }
                Err(SendError::Unsent(_, e) | SendError::Failed(e)) => {
                    return Err(transport(error_chain(&e)));
                }
            }
        };
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpError::TooLarge {
                        host: key.host().to_string(),
                    }
                } else {
                    transport(e.to_string())
                }
            })?
            .to_bytes();
        // Read whole: the connection is free for another request.
        self.pool.checkin(key, conn);
        Ok(Response::from_parts(parts, body))
    }
}

/// The connector over the TLS settings of `tls`: `https` with TLS (ALPN `h2`, `http/1.1`),
/// `http` without, both over TCP with `TCP_NODELAY`, as nginx and Envoy set on their upstream
/// connections: a request or an answer written in two parts (a body past one segment) must not
/// wait for the peer's delayed ACK. The HTTPS wrapper enforces the scheme, so the TCP connector
/// does not.
fn connector(
    tls: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
) -> pool::Connector {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    tls.https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp)
}

impl HttpClient for HyperClient {
    fn send(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response<Bytes>, HttpError>> {
        Box::pin(async move {
            let Some(key) = Key::of(req.uri()) else {
                return Err(HttpError::Transport {
                    host: req.uri().host().unwrap_or_default().to_string(),
                    detail: format!("`{}` is not an absolute URI", req.uri()),
                });
            };
            match tokio::time::timeout(timeout, self.exchange(&key, req)).await {
                Ok(r) => r,
                Err(_) => Err(HttpError::Timeout {
                    host: key.host().to_string(),
                    after: timeout,
                }),
            }
        })
    }
}

/// Renders an error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
