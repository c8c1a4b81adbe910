//! The floor of stepgate's HTTP stack, for the side-by-side harness: the same runtime, connection
//! builder (`listen::connection_builder`), outbound client (`http_client::HyperClient`) and
//! allocator as `stepgate serve`, forwarding every request to one upstream and doing nothing
//! else (no token check, no policy, no audit, no signing). What this costs per request is what
//! any proxy built on these parts pays before its own work; nginx's plain proxy row is the same
//! job in C.
//!
//!   cargo run --release --example bare_proxy -- 127.0.0.1:18095 http://127.0.0.1:18080
//!
//! Then, from a copy of `../shared/bench`: `BENCH_EXTRA="bare-hyper=http://127.0.0.1:18095/" ./run.sh`
//! (start it pinned like the peers: `taskset -c 1 target/release/examples/bare_proxy ...`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use stepgate::http_client::{HttpClient, HyperClient};
use stepgate::listen::connection_builder;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MAX_BODY: usize = 1 << 20;

async fn forward(
    client: &HyperClient,
    base: &Uri,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, String> {
    let (parts, body) = req.into_parts();
    let body = stepgate::listen::body::read(body, &parts.headers, MAX_BODY)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Request::builder().method(parts.method).uri(base.clone());
    for name in [http::header::CONTENT_TYPE, http::header::AUTHORIZATION] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    if let Some(v) = parts.headers.get("x-amz-target") {
        out = out.header("x-amz-target", v);
    }
    let out = out.body(body).map_err(|e| e.to_string())?;
    let resp = client
        .send(out, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp.map(Full::new))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or("127.0.0.1:18095".into()).parse()?;
    let base: Uri = args
        .next()
        .unwrap_or("http://127.0.0.1:18080".into())
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client: &'static HyperClient = Box::leak(Box::new(HyperClient::new(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))?));
        let base: &'static Uri = Box::leak(Box::new(base));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| async move {
                    Ok::<_, Infallible>(match forward(client, base, req).await {
                        Ok(r) => r,
                        Err(e) => {
                            let mut r = Response::new(Full::new(Bytes::from(e)));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            r
                        }
                    })
                });
                let _ = connection_builder(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
