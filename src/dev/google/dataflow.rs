//! The Dataflow v1b3 side of the Google sandbox: routing, permissions, launch, get, update, list.

use std::collections::{BTreeMap, HashMap};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Answer, FLEX_ENVIRONMENT, GoogleSandbox, Job, RUNTIME_ENVIRONMENT, is_terminal, query, reply,
    rpc,
};

impl GoogleSandbox {
    pub(super) fn dataflow(&self, parts: &http::request::Parts, rest: &str, body: &[u8]) -> Answer {
        let principal = match self.principal(&parts.headers) {
            Ok(p) => p,
            Err(e) => {
                return rpc(
                    401,
                    "UNAUTHENTICATED",
                    &format!(
                        "Request had invalid authentication credentials. Expected OAuth 2 access token: {e}"
                    ),
                );
            }
        };
        if let Some((status, code)) = self.state().inject.pop_front() {
            return rpc(status, &code, "injected failure");
        }
        // {project}/locations/{location}/{what}
        let segs: Vec<&str> = rest.splitn(4, '/').collect();
        let [project, "locations", location, what] = segs.as_slice() else {
            return rpc(404, "NOT_FOUND", "unknown Dataflow path");
        };
        let (project, location) = (project.to_string(), location.to_string());
        let need = |perm: &str| -> Option<Answer> {
            let ok = self.state().grants.contains(&(
                principal.clone(),
                project.clone(),
                perm.to_string(),
            ));
            (!ok).then(|| {
                rpc(
                    403,
                    "PERMISSION_DENIED",
                    &format!("Permission '{perm}' denied on project: '{project}'"),
                )
            })
        };
        let q = query(&parts.uri);
        let m = &parts.method;
        let answer = match *what {
            "templates:launch" | "flexTemplates:launch" if m == Method::POST => {
                if let Some(d) = need("dataflow.jobs.create") {
                    return d;
                }
                self.launch(
                    *what == "flexTemplates:launch",
                    &project,
                    &location,
                    &q,
                    body,
                )
            }
            "jobs" if m == Method::GET => {
                if let Some(d) = need("dataflow.jobs.list") {
                    return d;
                }
                self.list(&project, &location, &q)
            }
            w if w.starts_with("jobs/") => {
                let id = w.trim_start_matches("jobs/");
                if m == Method::GET {
                    if let Some(d) = need("dataflow.jobs.get") {
                        return d;
                    }
                    self.get(&project, &location, id)
                } else if m == Method::PUT {
                    if let Some(d) = need("dataflow.jobs.cancel") {
                        return d;
                    }
                    self.update(&project, &location, id, body)
                } else {
                    rpc(405, "METHOD_NOT_ALLOWED", "GET or PUT")
                }
            }
            _ if matches!(*what, "templates:launch" | "flexTemplates:launch" | "jobs") => {
                rpc(405, "METHOD_NOT_ALLOWED", "wrong method")
            }
            _ => rpc(404, "NOT_FOUND", "unknown Dataflow method"),
        };
        if answer.status().is_success() {
            self.state()
                .calls
                .push((m.to_string(), parts.uri.path().to_string(), principal));
        }
        answer
    }

    fn launch(
        &self,
        flex: bool,
        project: &str,
        location: &str,
        q: &HashMap<String, String>,
        body: &[u8],
    ) -> Answer {
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return rpc(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        };
        let unknown = |obj: &Value, allowed: &[&str]| -> Option<String> {
            obj.as_object()?
                .keys()
                .find(|k| !allowed.contains(&k.as_str()))
                .cloned()
        };
        let (params, validate_only) = if flex {
            if let Some(k) = unknown(&b, &["launchParameter", "validateOnly"]) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. Unknown name \"{k}\""),
                );
            }
            let lp = &b["launchParameter"];
            if let Some(k) = unknown(
                lp,
                &[
                    "jobName",
                    "containerSpecGcsPath",
                    "containerSpec",
                    "parameters",
                    "launchOptions",
                    "environment",
                    "update",
                    "transformNameMappings",
                ],
            ) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'launch_parameter'"
                    ),
                );
            }
            let spec = lp["containerSpecGcsPath"].as_str().unwrap_or("");
            if !spec.starts_with("gs://") && lp.get("containerSpec").is_none() {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    "containerSpecGcsPath must be a gs:// path",
                );
            }
            let env: Vec<&str> = RUNTIME_ENVIRONMENT
                .iter()
                .chain(FLEX_ENVIRONMENT)
                .copied()
                .collect();
            if let Some(k) = unknown(&lp["environment"], &env) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'launch_parameter.environment'"
                    ),
                );
            }
            (lp.clone(), b["validateOnly"].as_bool().unwrap_or(false))
        } else {
            if !q.get("gcsPath").is_some_and(|p| p.starts_with("gs://")) {
                return rpc(400, "INVALID_ARGUMENT", "gcsPath must be a gs:// path");
            }
            if let Some(k) = unknown(
                &b,
                &[
                    "jobName",
                    "parameters",
                    "environment",
                    "update",
                    "transformNameMapping",
                ],
            ) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. Unknown name \"{k}\""),
                );
            }
            if let Some(k) = unknown(&b["environment"], RUNTIME_ENVIRONMENT) {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    &format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'launch_parameters.environment'"
                    ),
                );
            }
            (
                b.clone(),
                q.get("validateOnly").is_some_and(|v| v == "true"),
            )
        };
        let name = params["jobName"].as_str().unwrap_or("");
        if !crate::config::valid_dataflow_job_name(name) {
            return rpc(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid job name `{name}`: [a-z]([-a-z0-9]{{0,1022}}[a-z0-9])?"),
            );
        }
        if let Some(p) = params.get("parameters") {
            let all_strings = p
                .as_object()
                .is_some_and(|o| o.values().all(Value::is_string));
            if !all_strings {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    "parameters must map strings to strings",
                );
            }
        }
        if validate_only {
            return reply(StatusCode::OK, &json!({}));
        }
        let now = self.clock.now();
        let mut st = self.state();
        let active = st.jobs.iter().any(|j| {
            j.project == project
                && j.location == location
                && j.json["name"] == name
                && !is_terminal(j.json["currentState"].as_str().unwrap_or(""))
        });
        if active {
            return rpc(
                409,
                "ALREADY_EXISTS",
                &format!(
                    "There is already an active job named {name}. If you want to submit a second job, try again by setting a different name."
                ),
            );
        }
        st.seq += 1;
        let t = time::OffsetDateTime::from(now);
        let id = format!(
            "{:04}-{:02}-{:02}_{:02}_{:02}_{:02}-{:019}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            st.seq * 7_919 + u64::from(rand::random::<u16>())
        );
        let stamp = crate::app::rfc3339(now);
        let job = json!({
            "id": id,
            "projectId": project,
            "name": name,
            "type": "JOB_TYPE_BATCH",
            "currentState": "JOB_STATE_RUNNING",
            "currentStateTime": stamp,
            "createTime": stamp,
            "startTime": stamp,
            "location": location,
            "labels": params["environment"]["additionalUserLabels"].clone(),
        });
        st.jobs.push(Job {
            json: job.clone(),
            project: project.to_string(),
            location: location.to_string(),
            parameters: params["parameters"].clone(),
            kind: if flex { "flex" } else { "classic" },
        });
        st.launches += 1;
        reply(StatusCode::OK, &json!({"job": job}))
    }

    fn get(&self, project: &str, location: &str, id: &str) -> Answer {
        let st = self.state();
        match st
            .jobs
            .iter()
            .find(|j| j.project == project && j.location == location && j.json["id"] == id)
        {
            Some(j) => reply(StatusCode::OK, &j.json),
            None => rpc(404, "NOT_FOUND", &format!("(job) {id} not found")),
        }
    }

    fn update(&self, project: &str, location: &str, id: &str, body: &[u8]) -> Answer {
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return rpc(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
        };
        let requested = b["requestedState"].as_str().unwrap_or("");
        let terminal_to = match requested {
            "JOB_STATE_CANCELLED" | "JOB_STATE_DRAINED" | "JOB_STATE_DONE" => requested,
            _ => {
                return rpc(
                    400,
                    "INVALID_ARGUMENT",
                    "requestedState must be JOB_STATE_CANCELLED, JOB_STATE_DRAINED or JOB_STATE_DONE",
                );
            }
        };
        let now = crate::app::rfc3339(self.clock.now());
        let mut st = self.state();
        let Some(j) = st
            .jobs
            .iter_mut()
            .find(|j| j.project == project && j.location == location && j.json["id"] == id)
        else {
            return rpc(404, "NOT_FOUND", &format!("(job) {id} not found"));
        };
        let state = j.json["currentState"].as_str().unwrap_or("").to_string();
        if is_terminal(&state) {
            return rpc(
                400,
                "FAILED_PRECONDITION",
                &format!("Workflow modification failed: the job is in state {state}"),
            );
        }
        j.json["requestedState"] = json!(terminal_to);
        j.json["currentState"] = json!(terminal_to);
        j.json["currentStateTime"] = json!(now);
        reply(StatusCode::OK, &j.json)
    }

    fn list(&self, project: &str, location: &str, q: &HashMap<String, String>) -> Answer {
        let filter = q.get("filter").map(String::as_str).unwrap_or("ALL");
        if !matches!(filter, "ALL" | "ACTIVE" | "TERMINATED" | "UNKNOWN") {
            return rpc(
                400,
                "INVALID_ARGUMENT",
                "filter must be ALL, ACTIVE or TERMINATED",
            );
        }
        let size: usize = q
            .get("pageSize")
            .and_then(|s| s.parse().ok())
            .unwrap_or(50)
            .clamp(1, 100);
        let from: usize = q.get("pageToken").and_then(|s| s.parse().ok()).unwrap_or(0);
        let st = self.state();
        let jobs: Vec<&Value> = st
            .jobs
            .iter()
            .rev()
            .filter(|j| j.project == project && j.location == location)
            .map(|j| &j.json)
            .filter(|j| q.get("name").is_none_or(|n| j["name"] == n.as_str()))
            .filter(|j| {
                let t = is_terminal(j["currentState"].as_str().unwrap_or(""));
                match filter {
                    "ACTIVE" => !t,
                    "TERMINATED" => t,
                    _ => true,
                }
            })
            .collect();
        let page: Vec<&Value> = jobs.iter().skip(from).take(size).copied().collect();
        let mut out = BTreeMap::new();
        if !page.is_empty() {
            out.insert("jobs", json!(page));
        }
        if from + size < jobs.len() {
            out.insert("nextPageToken", json!((from + size).to_string()));
        }
        reply(StatusCode::OK, &json!(out))
    }
}
