//! The client against loopback peers: keep-alive reuse, peers that close, no resend of a
//! request that may have arrived, idle expiry, HTTP/2 by ALPN over TLS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Version;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting `roots` only.
fn client(roots: rustls::RootCertStore, idle_timeout: Duration) -> HyperClient {
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    HyperClient::with_connector(connector(tls), idle_timeout)
}

fn plain(idle_timeout: Duration) -> HyperClient {
    client(rustls::RootCertStore::empty(), idle_timeout)
}

fn post(url: &str) -> Request<Bytes> {
    Request::post(url)
        .body(Bytes::from_static(b"{\"input\":1}"))
        .unwrap()
}

/// A hyper server answering `ok`, the body length it read and the `Host` (or `:authority`) it
/// got; counts the connections it accepts.
async fn hyper_peer(tls: Option<Arc<rustls::ServerConfig>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .map(|h| h.to_str().unwrap_or("").to_string())
                        .or_else(|| req.uri().authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let body = req.into_body().collect().await?.to_bytes();
                    let text = format!("ok {} {host}", body.len());
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    (format!("{scheme}://127.0.0.1:{}", addr.port()), accepted)
}

/// A raw HTTP/1.1 peer: on each connection, answers the first `answered` requests (keep-alive,
/// no `Connection: close`) and then closes, reading one more request first if `read_last`.
/// Counts connections and requests read.
async fn raw_peer(
    answered: usize,
    read_last: bool,
) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (conns.clone(), reqs.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0..=answered {
                    if n == answered && !read_last {
                        break;
                    }
                    // One request: headers, then the 11-byte body the tests send.
                    loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
                            && buf.len() >= end + 4 + 11
                        {
                            buf.drain(..end + 4 + 11);
                            break;
                        }
                        let mut chunk = [0u8; 1024];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    if n < answered {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
                // Dropping the socket closes the connection.
            });
        }
    });
    (format!("http://127.0.0.1:{}", addr.port()), conns, reqs)
}

#[tokio::test]
async fn requests_in_turn_share_one_kept_alive_connection() {
    let (url, accepted) = hyper_peer(None).await;
    let client = plain(IDLE_TIMEOUT);
    for _ in 0..5 {
        let resp = client.send(post(&format!("{url}/x")), WAIT).await.unwrap();
        assert_eq!(resp.status(), 200);
        let host = url.trim_start_matches("http://");
        assert_eq!(resp.body(), &format!("ok 11 {host}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_peer_closed_after_answering_is_not_an_error() {
    // Each connection answers one request and closes without saying so beforehand.
    let (url, conns, reqs) = raw_peer(1, false).await;
    let client = plain(IDLE_TIMEOUT);
    for _ in 0..5 {
        let resp = client.send(post(&format!("{url}/x")), WAIT).await.unwrap();
        assert_eq!(resp.body(), "ok");
    }
    assert_eq!(reqs.load(Ordering::SeqCst), 5);
    assert_eq!(conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_request_that_may_have_reached_the_peer_is_not_sent_again() {
    // The connection answers one request, reads the next whole and closes unanswered.
    let (url, conns, reqs) = raw_peer(1, true).await;
    let client = plain(IDLE_TIMEOUT);
    let first = client.send(post(&format!("{url}/x")), WAIT).await.unwrap();
    assert_eq!(first.body(), "ok");
    let second = client.send(post(&format!("{url}/x")), WAIT).await;
    assert!(
        matches!(second, Err(HttpError::Transport { ref host, .. }) if host == "127.0.0.1"),
        "{second:?}"
    );
    // A resend would have opened a second connection before the error came back.
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    assert_eq!(reqs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_past_its_timeout_is_not_used() {
    let (url, accepted) = hyper_peer(None).await;
    // Wide enough that two requests in a row on a loaded test machine stay within it.
    let idle = Duration::from_millis(800);
    let client = plain(idle);
    client.send(post(&format!("{url}/x")), WAIT).await.unwrap();
    client.send(post(&format!("{url}/x")), WAIT).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    tokio::time::sleep(idle + Duration::from_millis(200)).await;
    client.send(post(&format!("{url}/x")), WAIT).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn https_peers_get_http2_by_alpn_on_one_shared_connection() {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let server = crate::listen::tls::server_config(
        &certs.join("server.crt"),
        &certs.join("server.key"),
        provider(),
    )
    .unwrap();
    let (url, accepted) = hyper_peer(Some(server)).await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(certs.join("dev-ca.crt")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = client(roots, IDLE_TIMEOUT);
    let first = client.send(post(&format!("{url}/x")), WAIT).await.unwrap();
    assert_eq!(first.version(), Version::HTTP_2);
    let host = url.trim_start_matches("https://");
    assert_eq!(first.body(), &format!("ok 11 {host}"));
    let together = futures_util::future::join_all(
        (0..8).map(|_| client.send(post(&format!("{url}/y")), WAIT)),
    )
    .await;
    for resp in together {
        assert_eq!(resp.unwrap().version(), Version::HTTP_2);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_peer_that_does_not_answer_in_time_is_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/x", listener.local_addr().unwrap());
    // Accepts and holds the connection open without a word.
    let held = tokio::spawn(async move { listener.accept().await });
    let err = plain(IDLE_TIMEOUT)
        .send(post(&url), Duration::from_millis(100))
        .await;
    assert!(
        matches!(err, Err(HttpError::Timeout { ref host, after }) if host == "127.0.0.1" && after == Duration::from_millis(100)),
        "{err:?}"
    );
    held.abort();
}
