//! The listener: TLS with HTTP/2 by ALPN, header-read timeout, graceful drain.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::Harness;

fn certs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs")
}

#[tokio::test]
async fn tls_serves_http2_and_http1_by_alpn() {
    let c = certs();
    let h = Harness::start_with(|cfg| {
        cfg.replace(
            "[server]\n",
            &format!(
                "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                c.join("server.crt").display(),
                c.join("server.key").display()
            ),
        )
    })
    .await;
    let https = h.base.replace("http://", "https://");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(c.join("dev-ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for want in [http::Version::HTTP_2, http::Version::HTTP_11] {
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_only();
        // The connector offers exactly one protocol by ALPN; the server must pick it.
        let connector = if want == http::Version::HTTP_2 {
            b.enable_http2().build()
        } else {
            b.enable_http1().build()
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector);
        let req = http::Request::post(format!("{https}/v1/steps/nightly-load/executions"))
            .header("authorization", format!("Bearer {}", h.token("alice")))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.version(), want);
        assert_eq!(resp.status(), 201);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("execution_id"));
    }
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let h = Harness::start_with(|c| {
        c.replace("[server]\n", "[server]\nheader_read_timeout = \"1s\"\n")
    })
    .await;
    let addr = h.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /v1/steps/nightly-load/executions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server closes (possibly after a 408) well before this bound.
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 10 s");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    // An upstream that answers after 1.5 s.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_url = format!("http://{}", slow.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = slow.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let body = r#"{"executionArn":"arn:aws:states:us-east-1:123456789012:execution:nightly-load:slow","startDate":1}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let mut h = Harness::start_with(|c| {
        let start = c.find("endpoint = \"").unwrap();
        let end = c[start..].find('\n').unwrap() + start;
        format!("{}endpoint = \"{slow_url}\"{}", &c[..start], &c[end..])
    })
    .await;
    let base = h.base.clone();
    let token = h.token("alice");
    let inflight = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let req = http::Request::post(format!("{base}/v1/steps/nightly-load/executions"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        client.request(req).await.map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = h.base.trim_start_matches("http://").to_string();
    let done = h.done.take().unwrap();
    h.stop().await; // signals shutdown; `done` is the server task
    let status = tokio::time::timeout(Duration::from_secs(10), inflight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.unwrap(), 201, "the in-flight request was cut off");
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .unwrap()
        .unwrap();
    // Stopped accepting.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}
