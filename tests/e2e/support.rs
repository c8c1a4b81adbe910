//! Test harness: a real stepgate (same code as `serve`) on an ephemeral loopback port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use stepgate::app::{App, Deps};
use stepgate::clock::SystemClock;
use stepgate::dev::{self, issuer::DevIssuer, sandbox::Sandbox};
use stepgate::listen::Server;

pub struct Harness {
    pub base: String,
    pub issuer: Arc<DevIssuer>,
    pub sandbox: Arc<Sandbox>,
    pub app: Arc<App>,
    pub dir: tempfile::TempDir,
    pub audit_path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Harness {
    /// The dev configuration, as `stepgate dev` runs it.
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    /// The dev configuration with an edit applied to its TOML text.
    pub async fn start_with(edit: impl FnOnce(String) -> String) -> Self {
        let clock = Arc::new(SystemClock);
        let issuer = dev::issuer::start(0, clock).await.unwrap();
        let sandbox = dev::sandbox::start(0, dev::DEV_REGION).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join("audit/log.jsonl");
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = edit(dev::dev_config(
            listen,
            &issuer.url,
            &sandbox.url,
            &audit_path,
        ));
        let path = dev::write_workspace(dir.path(), &config).unwrap();
        let settings = stepgate::config::load(&path).unwrap();
        let app = Arc::new(App::build(settings, Deps::real().unwrap()).unwrap());
        let _unreachable = app.authn.warm().await; // as `serve` does at start-up
        stepgate::authz::reload::spawn(&app); // as `serve` does
        for (_, p) in app.upstreams.credentials.providers() {
            let _ = p.get().await; // warm, as the refresh task does first
        }
        app.spawn_credential_refresh();
        let server = Server::bind(app.clone(), listen).await.unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            base,
            issuer,
            sandbox,
            app,
            dir,
            audit_path,
            shutdown: Some(tx),
            done: Some(done),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn token(&self, who: &str) -> String {
        self.issuer
            .token_for(who, Duration::from_secs(600))
            .unwrap()
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("stepgate answered within 20 s")
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// A request with one `Authorization` header (`Bearer <token>`, or a scheme under test).
    pub async fn authorized(
        &self,
        method: &str,
        path: &str,
        authorization: &str,
        body: &str,
    ) -> Reply {
        self.send(method, path, &[("authorization", authorization)], body)
            .await
    }

    /// POST a start as `who`.
    pub async fn start_as(&self, who: &str, step: &str, body: &str) -> Reply {
        let auth = format!("Bearer {}", self.token(who));
        self.send(
            "POST",
            &format!("/v1/steps/{step}/executions"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// The audit log's records, once everything submitted so far is durable (outcome records
    /// go with the next group commit, after the answer).
    pub async fn audit_records(&self) -> Vec<Value> {
        self.app.audit.flush().await.unwrap();
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The decision record of the request that got `reply`.
    pub async fn decision_of(&self, reply: &Reply) -> Value {
        self.audit_records()
            .await
            .into_iter()
            .find(|x| x["request_id"] == reply.json["request_id"] && x["event"] == "decision")
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), d).await;
        }
    }
}

pub fn error_code(r: &Reply) -> &str {
    r.json["error"]["code"].as_str().unwrap_or("")
}
