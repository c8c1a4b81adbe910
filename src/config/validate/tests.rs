use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"

[policies]
dir = "policies"

[audit]
path = "audit/log.jsonl"

[[issuers]]
name = "corp"
issuer = "https://login.example.com"
audiences = ["stepgate"]

[credentials.etl]
kind = "aws_static"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret"

[steps.nightly-load]
pipeline = "nightly-etl"
kind = "stepfunctions"
state_machine_arn = "arn:aws:states:us-east-1:123456789012:stateMachine:nightly-load"
credentials = "etl"
[steps.nightly-load.attributes]
env = "prod"
tier = 1
"#;

fn parse_at(text: &str) -> Result<Settings, Problems> {
    parse(text, Path::new("/etc/stepgate/stepgate.toml"))
}

#[test]
fn a_good_file_resolves_paths_against_its_folder() {
    let s = parse_at(GOOD).unwrap();
    assert_eq!(s.policies_dir, Path::new("/etc/stepgate/policies"));
    assert_eq!(s.audit_path, Path::new("/etc/stepgate/audit/log.jsonl"));
    let step = &s.steps["nightly-load"];
    assert_eq!(step.attributes["tier"], AttrValue::Long(1));
    let StepTarget::StepFunctions {
        arn,
        endpoint,
        sync_endpoint,
        sync,
    } = &step.target
    else {
        panic!("not a Step Functions step")
    };
    assert_eq!(
        sync_endpoint.to_string(),
        "https://sync-states.us-east-1.amazonaws.com/"
    );
    assert!(!sync);
    assert_eq!(arn.region, "us-east-1");
    assert_eq!(
        endpoint.to_string(),
        "https://states.us-east-1.amazonaws.com/"
    );
    assert_eq!(s.issuers[0].leeway, Duration::from_secs(60));
}

#[test]
fn every_problem_is_reported_with_line_and_key() {
    let text = GOOD
        .replace("dir = \"policies\"", "dir = \"policies\"\ndri = \"x\"")
        .replace("credentials = \"etl\"", "credentials = \"nope\"")
        .replace(
            "audiences = [\"stepgate\"]",
            "audiences = [\"stepgate\"]\naudience = \"x\"",
        );
    let err = parse_at(&text).unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("/etc/stepgate/stepgate.toml:7: policies: unknown field `dri`"),
        "{all}"
    );
    assert!(
        all.contains("issuers[0]: unknown field `audience`"),
        "{all}"
    );
    assert!(
        all.contains("steps.nightly-load.credentials: no `[credentials.nope]` block"),
        "{all}"
    );
    assert_eq!(err.0.len(), 3, "{all}");
}

#[test]
fn an_unknown_key_in_any_table_is_rejected() {
    for (anchor, table) in [
        ("[server]\n", "server"),
        ("[policies]\n", "policies"),
        ("[audit]\n", "audit"),
        ("name = \"corp\"\n", "issuers[0]"),
        ("kind = \"aws_static\"\n", "credentials.etl"),
        ("pipeline = \"nightly-etl\"\n", "steps.nightly-load"),
    ] {
        let text = GOOD.replacen(anchor, &format!("{anchor}typo_key = 1\n"), 1);
        let err = parse_at(&text).expect_err(table);
        assert!(err.to_string().contains(table), "{table}: {err}");
        assert!(err.to_string().contains("typo_key"), "{table}: {err}");
    }
    let err = parse_at(&format!("{GOOD}\n[extra]\na = 1\n")).unwrap_err();
    assert!(err.to_string().contains("unknown key `extra`"), "{err}");
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let text = GOOD.replace("127.0.0.1:8443", "0.0.0.0:8443");
    let err = parse_at(&text).unwrap_err();
    assert!(
        err.to_string()
            .contains("plain HTTP is only allowed on a loopback address"),
        "{err}"
    );
}

#[test]
fn syntax_errors_carry_their_line() {
    let err = parse_at("[server]\nlisten = \n").unwrap_err();
    assert_eq!(err.0[0].line, Some(2), "{err}");
}

#[test]
fn issuer_urls_must_be_https_unless_loopback() {
    let err = parse_at(&GOOD.replace("https://login.example.com", "http://login.example.com"))
        .unwrap_err();
    assert!(err.to_string().contains("must be an https URL"), "{err}");
    assert!(parse_at(&GOOD.replace("https://login.example.com", "http://127.0.0.1:9000")).is_ok());
}

#[test]
fn unknown_kinds_and_bad_arns_are_errors() {
    let err = parse_at(&GOOD.replace("kind = \"stepfunctions\"", "kind = \"lambda\"")).unwrap_err();
    assert!(
        err.to_string().contains("unknown step kind `lambda`"),
        "{err}"
    );
    let err = parse_at(&GOOD.replace("stateMachine:nightly-load", "function:x")).unwrap_err();
    assert!(
        err.to_string().contains("is not a state machine ARN"),
        "{err}"
    );
    let err = parse_at(&GOOD.replace("aws_static", "aws_magic")).unwrap_err();
    assert!(err.to_string().contains("aws_magic"), "{err}");
}

#[test]
fn secrets_do_not_print_in_debug() {
    let s = parse_at(GOOD).unwrap();
    let dbg = format!("{:?}", s.credentials);
    assert!(!dbg.contains("secret\""), "{dbg}");
    assert!(dbg.contains("[redacted]"));
}

#[test]
fn credential_kinds_are_checked() {
    let roles = r#"
[credentials.runner]
kind = "aws_assume_role"
role_arn = "arn:aws:iam::123456789012:role/runner"
source = "etl"
external_id = "ext-1"
duration = "30m"

[credentials.irsa]
kind = "aws_web_identity"
role_arn = "arn:aws:iam::123456789012:role/irsa"
token_file = "token"

[credentials.chain]
kind = "aws_default_chain"
"#;
    let s = parse_at(&format!("{GOOD}{roles}")).unwrap();
    let CredentialSettings::AwsAssumeRole(a) = &s.credentials["runner"] else {
        panic!()
    };
    assert_eq!(
        (a.source.as_str(), a.sts.duration),
        ("etl", Duration::from_secs(1800))
    );
    assert_eq!(a.sts.session_name, "stepgate");
    let CredentialSettings::AwsWebIdentity(w) = &s.credentials["irsa"] else {
        panic!()
    };
    assert_eq!(w.token_file, Path::new("/etc/stepgate/token"));
    assert!(format!("{:?}", a.external_id).contains("[redacted]"));

    let bad = roles
        .replace("source = \"etl\"", "source = \"runner\"")
        .replace("duration = \"30m\"", "duration = \"13h\"")
        .replace("role/irsa", "user/irsa");
    let err = parse_at(&format!("{GOOD}{bad}")).unwrap_err().to_string();
    assert!(
        err.contains("credentials.runner.source: role chaining"),
        "{err}"
    );
    assert!(
        err.contains("credentials.runner.duration: must be between 15m and 12h"),
        "{err}"
    );
    assert!(err.contains("credentials.irsa.role_arn"), "{err}");
}

const DATAFLOW: &str = r#"
[credentials.df-key]
kind = "gcp_service_account"
key_file = "keys/sa.json"

[credentials.df-runner]
kind = "gcp_impersonate"
source = "df-key"
target_service_account = "runner@acme-data.iam.gserviceaccount.com"
lifetime = "30m"
iam_endpoint = "http://127.0.0.1:9100"

[steps.daily_export]
pipeline = "analytics"
kind = "dataflow_flex_template"
project = "acme-data"
location = "europe-west1"
container_spec_gcs_path = "gs://acme-templates/export.json"
credentials = "df-runner"
[steps.daily_export.environment]
tempLocation = "gs://acme-tmp/df"
maxWorkers = 10

[steps.wordcount]
pipeline = "analytics"
kind = "dataflow_template"
project = "acme-data"
location = "europe-west1"
gcs_path = "gs://dataflow-templates/latest/Word_Count"
credentials = "df-key"
"#;

#[test]
fn dataflow_steps_and_google_credentials() {
    let s = parse_at(&format!("{GOOD}{DATAFLOW}")).unwrap();
    let step = &s.steps["daily_export"];
    assert_eq!(step.kind, StepKind::DataflowFlexTemplate);
    let StepTarget::Dataflow(t) = &step.target else {
        panic!("not a Dataflow step")
    };
    assert_eq!(
        t.job_name_prefix, "daily-export",
        "derived from the step name"
    );
    assert_eq!(t.endpoint.to_string(), "https://dataflow.googleapis.com/");
    assert_eq!(t.environment["maxWorkers"], serde_json::json!(10));
    assert_eq!(
        t.template,
        DataflowTemplate::Flex {
            container_spec_gcs_path: "gs://acme-templates/export.json".into()
        }
    );
    let CredentialSettings::GcpServiceAccount { key_file, scopes } = &s.credentials["df-key"]
    else {
        panic!()
    };
    assert_eq!(key_file, Path::new("/etc/stepgate/keys/sa.json"));
    assert_eq!(scopes, &vec![CLOUD_PLATFORM_SCOPE.to_string()]);
    let CredentialSettings::GcpImpersonate(i) = &s.credentials["df-runner"] else {
        panic!()
    };
    assert_eq!(i.lifetime, Duration::from_secs(1800));
}

#[test]
fn steps_must_use_credentials_of_their_cloud() {
    let text = format!("{GOOD}{DATAFLOW}").replace(
        "gcs_path = \"gs://dataflow-templates/latest/Word_Count\"\ncredentials = \"df-key\"",
        "gcs_path = \"gs://dataflow-templates/latest/Word_Count\"\ncredentials = \"etl\"",
    );
    let err = parse_at(&text).unwrap_err().to_string();
    assert!(
        err.contains("steps.wordcount.credentials: `etl` are AWS credentials; a `dataflow_template` step needs Google Cloud credentials"),
        "{err}"
    );
    let text = format!("{GOOD}{DATAFLOW}").replace(
        "credentials = \"etl\"\n[steps.nightly-load.attributes]",
        "credentials = \"df-key\"\n[steps.nightly-load.attributes]",
    );
    let err = parse_at(&text).unwrap_err().to_string();
    assert!(
        err.contains("steps.nightly-load.credentials: `df-key` are Google Cloud credentials"),
        "{err}"
    );
    let text = format!("{GOOD}{DATAFLOW}").replace("source = \"df-key\"", "source = \"etl\"");
    let err = parse_at(&text).unwrap_err().to_string();
    assert!(
        err.contains("credentials.df-runner.source: `etl` is `aws_static`"),
        "{err}"
    );
}

#[test]
fn dataflow_steps_are_checked() {
    let bad = DATAFLOW
        .replace(
            "container_spec_gcs_path = \"gs://acme-templates/export.json\"\n",
            "gcs_path = \"gs://x/y\"\n",
        )
        .replace("gs://dataflow-templates/latest/Word_Count", "/local/path")
        .replace(
            "location = \"europe-west1\"\ngcs_path",
            "location = \"Europe West\"\ngcs_path",
        );
    let err = parse_at(&format!("{GOOD}{bad}")).unwrap_err().to_string();
    for want in [
        "steps.daily_export.container_spec_gcs_path: required for kind `dataflow_flex_template`",
        "steps.daily_export.gcs_path: not used by kind `dataflow_flex_template`",
        "steps.wordcount.gcs_path: `/local/path` must be a Cloud Storage path",
        "steps.wordcount.location: `Europe West` is not a region",
    ] {
        assert!(err.contains(want), "missing `{want}` in {err}");
    }
    // Job-name prefixes of one project and location must not overlap.
    let overlap = format!("{DATAFLOW}job_name_prefix = \"daily-export-x\"\n");
    let err = parse_at(&format!("{GOOD}{overlap}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "steps.wordcount.job_name_prefix: `daily-export-x` overlaps step `daily_export`"
        ),
        "{err}"
    );
}

#[test]
fn the_audit_journal_is_on_by_default_and_its_size_is_checked() {
    assert_eq!(parse_at(GOOD).unwrap().audit_journal_bytes, 8 * 1024 * 1024);
    let with = |v: &str| {
        GOOD.replace(
            "path = \"audit/log.jsonl\"",
            &format!("path = \"audit/log.jsonl\"\njournal_bytes = {v}"),
        )
    };
    assert_eq!(parse_at(&with("0")).unwrap().audit_journal_bytes, 0);
    assert_eq!(parse_at(&with("65536")).unwrap().audit_journal_bytes, 65536);
    for bad in ["100", "2147483648"] {
        let err = parse_at(&with(bad)).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].key, "audit.journal_bytes", "{err}");
    }
}
