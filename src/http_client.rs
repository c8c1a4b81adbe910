//! The outbound HTTP seam: discovery, JWKS and upstream calls go through `HttpClient`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest response body stepgate reads from any peer (JWKS, discovery, workflow APIs).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most outbound calls in flight at once; more wait for a turn (within their deadline). Each
/// call holds a pooled connection with its buffers and task, so this bounds the connections
/// and memory a flood of callers can make stepgate open (at ~100 ms per workflow API call it
/// still allows a few thousand calls a second, above the workflow APIs' own start quotas).
pub const MAX_IN_FLIGHT: usize = 256;
/// Idle connections kept per host (nginx's `keepalive 64` of its upstream blocks).
const MAX_IDLE_PER_HOST: usize = 64;

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
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    in_flight: tokio::sync::Semaphore,
}

impl HyperClient {
    /// Builds the client with the system's root certificates.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> std::io::Result<Self> {
        // TCP_NODELAY, as nginx and Envoy set on their upstream connections: a request or an
        // answer written in two parts (a body past one segment) must not wait for the peer's
        // delayed ACK. The HTTPS wrapper enforces the scheme, so the inner connector does not.
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .build(connector);
        Ok(Self {
            client,
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        })
    }
}

impl HttpClient for HyperClient {
    fn send(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Response<Bytes>, HttpError>> {
        Box::pin(async move {
            let host = req.uri().host().unwrap_or_default().to_string();
            let req = req.map(Full::new);
            let exchange = async {
                let _turn = self
                    .in_flight
                    .acquire()
                    .await
                    .map_err(|e| HttpError::Transport {
                        host: host.clone(),
                        detail: e.to_string(),
                    })?;
                let resp = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| HttpError::Transport {
                        host: host.clone(),
                        detail: error_chain(&e),
                    })?;
                let (parts, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            HttpError::TooLarge { host: host.clone() }
                        } else {
                            HttpError::Transport {
                                host: host.clone(),
                                detail: e.to_string(),
                            }
                        }
                    })?
                    .to_bytes();
                Ok(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => Err(HttpError::Timeout {
                    host,
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
