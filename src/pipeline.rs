//! The request pipeline (DESIGN.md §1), on one screen:
//! route -> authenticate -> read body -> step -> authorize -> validate -> audit -> forward
//! -> audit outcome -> respond. Every API request that ends early is audited from its [`Trail`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::audit::{AuditTicket, CallerRef, Entry, record::sha256_hex};
use crate::authn::Identity;
use crate::authz::RequestFacts;
use crate::error::Error;
use crate::forward::{self, Outcome, Raw};
use crate::listen::body;
use crate::model::Action;
use crate::respond::{self, Body};
use crate::route::{self, Endpoint};
use crate::validate;

/// What earlier stages learned, for the audit record of however the request ends.
#[derive(Debug)]
pub struct Trail {
    request_id: String,
    started: Instant,
    source_ip: IpAddr,
    /// `source_ip` as the audit records write it (formatted once, not per record).
    source_ip_text: String,
    caller: Option<CallerRef>,
    action: Option<Action>,
    step: Option<String>,
    input_sha256: Option<String>,
    input_fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// The permitting policy ids, once a policy permitted.
    reasons: Option<Arc<[String]>>,
    /// The allow decision is durable: what follows is an `outcome`.
    ticket: Option<AuditTicket>,
    /// A fronted AWS request: answers in the AWS JSON protocol's shapes.
    aws: bool,
}

impl Trail {
    /// The record of this request so far, at `time`; it borrows the trail.
    fn entry<'a>(
        &'a self,
        time: &'a str,
        event: &'static str,
        decision: &'static str,
    ) -> Entry<'a> {
        Entry {
            time,
            request_id: &self.request_id,
            event,
            caller: self.caller.as_ref(),
            action: self.action.map(Action::as_str),
            step: self.step.as_deref(),
            decision,
            reasons: self.reasons.as_deref().unwrap_or(&[]),
            input_sha256: self.input_sha256.as_deref(),
            input_fields: self.input_fields.as_ref(),
            status: None,
            execution_id: None,
            execution_name: None,
            latency_ms: None,
            source_ip: Some(&self.source_ip_text),
        }
    }

    fn set_identity(&mut self, id: &Identity) {
        self.caller = Some(CallerRef {
            issuer: id.issuer.clone(),
            sub: id.sub.clone(),
            email: id.email.clone(),
        });
    }

    /// Writes a record of how the request ended: after a durable decision it is the outcome,
    /// written with the next group commit; otherwise it is the decision itself (a refusal),
    /// durable before it is answered.
    /// The record is sealed by this call; the future (ready at once for an outcome) waits for
    /// what must be durable, and holds neither the entry nor the record.
    fn record(
        &self,
        app: &App,
        entry: &Entry<'_>,
    ) -> impl Future<Output = Result<u64, crate::audit::AuditError>> + Send + 'static + use<> {
        match &self.ticket {
            Some(ticket) => {
                Either::Left(std::future::ready(app.audit.write_outcome(ticket, entry)))
            }
            None => Either::Right(app.audit.write(entry)),
        }
    }

    fn latency_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Handles one HTTP request. Never fails: every error becomes the contract's JSON answer.
/// Takes the app by `Arc` so the connection boxes this future itself, not a wrapper around it.
pub async fn handle<B>(app: Arc<App>, req: Request<B>, peer: SocketAddr) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let app = &*app;
    let request_id = req
        .headers()
        .get(respond::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| respond::well_formed_request_id(s))
        .map(str::to_string)
        .unwrap_or_else(|| {
            uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .to_string()
        });
    let endpoint = route::resolve(req.method(), req.uri().path());
    let source_ip = route::source_ip(
        peer.ip(),
        req.headers(),
        &app.settings.server.trusted_proxies,
    );
    match &endpoint {
        Ok(Endpoint::Health) => {
            return respond::text(StatusCode::OK, "ok\n".into(), "text/plain", &request_id);
        }
        Ok(Endpoint::Ready) => {
            let r = app.readiness();
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return respond::json(status, &json!(r), &request_id);
        }
        Ok(Endpoint::Metrics) => {
            app.sync_credential_metrics();
            return respond::text(
                StatusCode::OK,
                app.metrics.render(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &request_id,
            );
        }
        _ => {}
    }
    let mut trail = Trail {
        request_id,
        started: Instant::now(),
        source_ip,
        source_ip_text: source_ip.to_string(),
        caller: None,
        action: None,
        step: None,
        input_sha256: None,
        input_fields: None,
        reasons: None,
        ticket: None,
        aws: false,
    };
    let result = api(app, endpoint, req, &mut trail).await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let status = e.status().as_u16();
            if trail.ticket.is_none() {
                app.metrics
                    .decisions
                    .get_or_create(&crate::observe::DecisionLabels { decision: "deny" })
                    .inc();
            }
            let (event, decision) = if trail.ticket.is_some() {
                ("outcome", "allow")
            } else {
                ("decision", "deny")
            };
            tracing::info!(
                request_id = %trail.request_id, status, code = e.code(),
                step = trail.step.as_deref().unwrap_or(""), reason = %e,
                "Request refused."
            );
            let durable = {
                let time = app.rfc3339_now();
                let reasons = e.audit_reason();
                let mut entry = trail.entry(&time, event, decision);
                entry.reasons = &reasons;
                entry.status = Some(status);
                entry.latency_ms = Some(trail.latency_ms());
                trail.record(app, &entry)
            };
            if let Err(ae) = durable.await {
                tracing::error!(message = "Could not audit a refused request.", error = %ae);
            }
            if trail.aws {
                respond::aws_error(&e, &trail.request_id)
            } else {
                respond::error(&e, &trail.request_id)
            }
        }
    };
    app.metrics
        .requests
        .get_or_create(&crate::observe::RequestLabels {
            action: trail.action.map_or("none", |a| a.as_str()),
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn api<B>(
    app: &App,
    endpoint: Result<Endpoint, route::RouteError>,
    req: Request<B>,
    trail: &mut Trail,
) -> Result<Response<Body>, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let endpoint = endpoint?; // 404 / 405
    // Everything up to the sealed decision lives in this block: none of it is held while the
    // request waits for the audit commit and the upstream (a smaller future to move and keep).
    let (trigger, durable) = {
        let (parts, body) = req.into_parts();
        let identity = app.authn.authenticate(&parts.headers).await?; // 401 / 503
        trail.set_identity(&identity);
        let body = body::read(body, &parts.headers, app.settings.server.max_body_bytes).await?; // 413
        if !body.is_empty() {
            trail.input_sha256 = Some(sha256_hex(&body));
        }
        if let Endpoint::ListSteps = endpoint {
            trail.action = Some(Action::List);
            let facts = RequestFacts {
                source_ip: trail.source_ip,
                now: app.clock.now(),
                input: None,
            };
            // Boxed: a rare path, kept out of the size of every request's future.
            return Box::pin(list_steps(app, &identity, &facts, trail)).await;
        }
        let trigger = admit(app, endpoint, &parts, &body, &identity, trail)?;
        let time = app.rfc3339_now();
        let mut decision = trail.entry(&time, "decision", "allow");
        decision.execution_name = trigger.execution_name();
        let durable = app.audit.write_decision(&decision);
        (trigger, durable)
    };
    let ticket = trail.ticket.insert(durable.await?); // 503: nothing sent
    app.metrics
        .decisions
        .get_or_create(&crate::observe::DecisionLabels { decision: "allow" })
        .inc();
    let upstream_started = Instant::now();
    let outcome = forward::send(&app.upstreams, &trigger, ticket).await;
    app.metrics
        .upstream_seconds
        .observe(upstream_started.elapsed().as_secs_f64());
    let outcome = outcome?; // 502 / 504 (audited as the outcome)
    let status = match &outcome {
        Outcome::Started {
            existing: false, ..
        } => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let written = {
        let time = app.rfc3339_now();
        let mut entry = trail.entry(&time, "outcome", "allow");
        entry.status = Some(status.as_u16());
        entry.execution_id = outcome.execution_id();
        entry.latency_ms = Some(trail.latency_ms());
        trail.record(app, &entry)
    };
    if let Err(e) = written.await {
        // The trigger happened and its decision is on record; report it, do not hide the result.
        tracing::error!(message = "Could not write an outcome record.", error = %e, request_id = %trail.request_id);
    }
    if trail.aws {
        // A fronted AWS caller gets the upstream's own answer.
        return Ok(match outcome.raw() {
            Raw::Verbatim(answer) => {
                respond::json_bytes(StatusCode::OK, answer.clone(), &trail.request_id)
            }
            Raw::Json(v) => respond::json(StatusCode::OK, v, &trail.request_id),
        });
    }
    let body = match &outcome {
        Outcome::Started {
            execution_id,
            result,
            ..
        } => {
            let mut b = json!({"step": trail.step, "execution_id": execution_id, "request_id": trail.request_id});
            // A synchronous (EXPRESS) start carries its result.
            if let (Some(o), Some(r)) = (
                b.as_object_mut(),
                result.as_ref().and_then(|r| r.as_object()),
            ) {
                o.extend(r.clone());
            }
            b
        }
        Outcome::Described { body, .. }
        | Outcome::Stopped { body, .. }
        | Outcome::Listed { body, .. } => {
            let mut b = body.clone();
            if let Some(o) = b.as_object_mut() {
                o.insert("step".into(), json!(trail.step));
                o.insert("request_id".into(), json!(trail.request_id));
            }
            b
        }
    };
    Ok(respond::json(status, &body, &trail.request_id))
}

/// Route -> step -> rate limit -> validate -> authorize -> trigger, for an authenticated request
/// whose body has been read. Synchronous: nothing here waits.
fn admit(
    app: &App,
    endpoint: Endpoint,
    parts: &http::request::Parts,
    body: &Bytes,
    identity: &Arc<Identity>,
    trail: &mut Trail,
) -> Result<validate::ValidatedTrigger, Error> {
    // A fronted API's start arrives already parsed into the native shape.
    let mut fronted_start = None;
    let route = match endpoint {
        Endpoint::Step(r) => r,
        Endpoint::AwsStates => {
            trail.aws = true;
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok());
            let (r, start) = route::aws_states(target, body, &app.state_machines)?; // 403 / 400
            fronted_start = start;
            r
        }
        _ => return Err(Error::Unavailable("unroutable".into())),
    };
    trail.action = Some(route.action);
    trail.step = Some(route.step.clone());
    let step = app
        .steps
        .get(&route.step)
        .cloned()
        .ok_or_else(|| Error::UnknownStep(route.step.clone()))?; // 404
    app.limits
        .check(&route.step, || identity.principal_id())
        .map_err(Error::RateLimited)?; // 429
    let list = match route.action {
        Action::List => Some(validate::parse_list_query(parts.uri.query())?), // 400
        _ => None,
    };
    let start = match route.action {
        Action::Start => Some(validate::apply_pinned(
            &step,
            validate::start_body(fronted_start, body)?,
        )?), // 400
        _ => None,
    };
    trail.input_fields = audit_fields(&step, start.as_ref());
    let facts = RequestFacts {
        source_ip: trail.source_ip,
        now: app.clock.now(),
        input: start.as_ref().and_then(|s| s.input.as_ref()),
    };
    let permit = app
        .policies
        .decide(identity, &route.step, route.action, &facts)??; // 403 / 503
    trail.reasons = Some(permit.shared_reasons());
    let idem = parts
        .headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    Ok(validate::trigger(
        permit,
        step,
        route.execution.as_deref(),
        start,
        validate::Naming {
            idempotency_key: idem,
            random: rand::random(),
        },
        &app.guardrails,
        list,
    )?) // 400
}

/// `GET /v1/steps`: the steps this caller may `start`.
async fn list_steps(
    app: &App,
    identity: &Arc<Identity>,
    facts: &RequestFacts<'_>,
    trail: &mut Trail,
) -> Result<Response<Body>, Error> {
    let mut steps = Vec::new();
    for (name, s) in &app.steps {
        if app
            .policies
            .decide(identity, name, Action::Start, facts)?
            .is_ok()
        {
            steps.push(json!({"step": name, "pipeline": s.pipeline, "kind": s.kind.as_str()}));
        }
    }
    let durable = {
        let time = app.rfc3339_now();
        let reasons = [format!("list: {} steps", steps.len())];
        let mut entry = trail.entry(&time, "decision", "allow");
        entry.status = Some(200);
        entry.reasons = &reasons;
        app.audit.write(&entry)
    };
    if let Err(e) = durable.await {
        tracing::error!(message = "Could not audit a list request.", error = %e);
    }
    Ok(respond::json(
        StatusCode::OK,
        &json!({"steps": steps, "request_id": trail.request_id}),
        &trail.request_id,
    ))
}

/// The input fields a step allows in clear in its audit records.
fn audit_fields(
    step: &crate::config::StepSettings,
    start: Option<&validate::StartBody>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    if step.audit_input_fields.is_empty() {
        return None;
    }
    let input = start?.input.as_ref()?.as_object()?;
    Some(
        step.audit_input_fields
            .iter()
            .filter_map(|k| input.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
    )
}
