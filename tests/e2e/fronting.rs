//! `POST /aws/states`: the Step Functions JSON protocol fronted unchanged, through the same
//! pipeline; an AWS SDK pointed at stepgate works with the token in `Proxy-Authorization`.

use serde_json::json;

use crate::support::Harness;

const SM: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:nightly-load";

async fn aws(
    h: &Harness,
    who: &str,
    target: &str,
    body: serde_json::Value,
) -> crate::support::Reply {
    let token = format!("Bearer {}", h.token(who));
    h.send(
        "POST",
        "/aws/states",
        &[
            // What an SDK sends itself; stepgate ignores it and reads Proxy-Authorization.
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/states/aws4_request, SignedHeaders=host, Signature=00"),
            ("proxy-authorization", &token),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target),
        ],
        &body.to_string(),
    )
    .await
}

#[tokio::test]
async fn the_aws_protocol_goes_through_the_same_pipeline() {
    let h = Harness::start().await;
    let r = aws(
        &h,
        "alice",
        "AWSStepFunctions.StartExecution",
        json!({"stateMachineArn": SM, "name": "fronted-1", "input": "{\"date\": \"2026-11-24\"}"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let exec = r.json["executionArn"].as_str().unwrap().to_string();
    assert!(exec.ends_with(":nightly-load:fronted-1"));
    // Pinned parameters and the audit apply as on the native API.
    assert_eq!(
        h.sandbox.executions()[0].input,
        r#"{"date":"2026-11-24","output_dataset":"warehouse.nightly"}"#
    );
    assert_eq!(h.audit_records().await[0]["decision"], "allow");

    let r = aws(
        &h,
        "victor",
        "AWSStepFunctions.DescribeExecution",
        json!({"executionArn": exec}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "RUNNING");

    // Refusals come back in the AWS error shape SDKs parse.
    let r = aws(
        &h,
        "victor",
        "AWSStepFunctions.StartExecution",
        json!({"stateMachineArn": SM}),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json["__type"], "AccessDeniedException");
    assert_eq!(r.headers["x-amzn-errortype"], "AccessDeniedException");
    let other = "arn:aws:states:us-east-1:123456789012:stateMachine:not-configured";
    let r = aws(
        &h,
        "alice",
        "AWSStepFunctions.StartExecution",
        json!({"stateMachineArn": other}),
    )
    .await;
    assert_eq!(
        (r.status, r.json["__type"].as_str()),
        (403, Some("AccessDeniedException")),
        "{}",
        r.json
    );
    let r = aws(
        &h,
        "alice",
        "AWSStepFunctions.DeleteStateMachine",
        json!({"stateMachineArn": SM}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.json);
    let r = aws(
        &h,
        "alice",
        "AWSStepFunctions.StartExecution",
        json!({"stateMachineArn": SM, "input": "{\"full_refresh\": true}"}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.json);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("no-full-refresh-in-prod")
    );
    assert_eq!(
        h.sandbox.executions().len(),
        1,
        "a refused fronted request reached the upstream"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_pointed_at_stepgate_works_with_proxy_authorization() {
    let Ok(python) = std::env::var("STEPGATE_TEST_PYTHON") else {
        assert_eq!(
            std::env::var("STEPGATE_SKIP_PEERS").as_deref(),
            Ok("1"),
            "run ./scripts/test (it provides boto3)"
        );
        return;
    };
    let h = Harness::start().await;
    let script = r#"
import os, sys, boto3
token = os.environ["TOKEN"]
c = boto3.client("stepfunctions", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                 aws_access_key_id="unused", aws_secret_access_key="unused")
c.meta.events.register("before-send.stepfunctions.*", lambda request, **kw: request.headers.__setitem__("Proxy-Authorization", "Bearer " + token))
r = c.start_execution(stateMachineArn=os.environ["SM"], name="from-boto3", input='{"date": "2026-11-24"}')
d = c.describe_execution(executionArn=r["executionArn"])
print(r["executionArn"], d["status"])
try:
    c.start_execution(stateMachineArn=os.environ["SM"], input='{"full_refresh": true}')
except c.exceptions.ClientError as e:
    print("refused", e.response["Error"]["Code"])
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .env("TOKEN", h.token("alice"))
        .env("ENDPOINT", format!("{}/aws/states", h.base))
        .env("SM", SM)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(":nightly-load:from-boto3 RUNNING"),
        "{stdout}"
    );
    assert!(stdout.contains("refused AccessDeniedException"), "{stdout}");
    assert_eq!(h.sandbox.executions().len(), 1);
    h.stop().await;
}
