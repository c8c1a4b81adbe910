//! The floor of stepgate's HTTP stack, for the side-by-side harness: the same runtime, server,
//! client and allocator as `stepgate serve`, forwarding every request to one upstream and doing
//! nothing else (no token check, no policy, no audit, no signing). What this costs per request
//! is what any proxy built on these parts pays before its own work; nginx's plain proxy row is
//! the same job in C.
//!
//!   cargo run --release --example bare_proxy -- 127.0.0.1:18095 http://127.0.0.1:18080
//!
//! Then, from a copy of `../shared/bench`: `BENCH_EXTRA="bare-hyper=http://127.0.0.1:18095/" ./run.sh`
//! (start it pinned like the peers: `taskset -c 1 target/release/examples/bare_proxy ...`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Full<Bytes>>;

const MAX_BODY: usize = 1 << 20;

async fn forward(
    client: &Upstream,
    base: &Uri,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, String> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let mut out = Request::builder().method(parts.method).uri(base.clone());
    for name in [http::header::CONTENT_TYPE, http::header::AUTHORIZATION] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    if let Some(v) = parts.headers.get("x-amz-target") {
        out = out.header("x-amz-target", v);
    }
    let out = out.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(out))
        .await
        .map_err(|_| "upstream timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
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
        let client: &'static Upstream = Box::leak(Box::new(
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build(HttpConnector::new()),
        ));
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
                // Served as `stepgate serve` serves: HTTP/1 or 2 by preface, header timeout.
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(64 * 1024);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
