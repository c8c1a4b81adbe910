//! The command line as users run it: exit codes and messages of DESIGN.md §2.

use std::process::Command;

fn stepgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stepgate"))
}

fn workspace(config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = stepgate::dev::write_workspace(dir.path(), config).unwrap();
    (dir, path)
}

fn dev_config() -> String {
    stepgate::dev::dev_config(
        "127.0.0.1:0".parse().unwrap(),
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        std::path::Path::new("audit.jsonl"),
    )
}

#[test]
fn check_says_ok_for_the_sample_setup() {
    let (_d, path) = workspace(&dev_config());
    let out = stepgate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("ok: 4 steps, 1 issuers, 7 policies"),
        "{stdout}"
    );
}

#[test]
fn check_lists_every_problem_with_file_and_line_and_exits_1() {
    let bad = dev_config()
        .replace("[policies]\n", "[policies]\ndirr = \"x\"\n")
        .replace(
            "pipeline = \"reporting\"",
            "pipeline = \"reporting\"\ncredentials_typo = 1",
        );
    let (dir, path) = workspace(&bad);
    let out = stepgate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{}:6: policies: unknown field `dirr`",
            path.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("steps.adhoc-report: unknown field `credentials_typo`"),
        "{stdout}"
    );
    drop(dir);
}

#[test]
fn check_reports_policy_errors_against_the_schema_with_file_and_line() {
    let (dir, path) = workspace(&dev_config());
    std::fs::write(
        dir.path().join("policies/typo.cedar"),
        "// a typo in an attribute\n@id(\"typo\")\npermit (principal, action, resource)\nwhen { resource.enviroment == \"prod\" };\n",
    )
    .unwrap();
    let out = stepgate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("typo.cedar:4: policy `typo`"), "{stdout}");
    assert!(stdout.contains("enviroment"), "{stdout}");
}

#[test]
fn step_attributes_must_match_the_schema() {
    let cfg = dev_config().replace("owner = \"data-eng\"", "ownr = \"data-eng\"");
    let (_dir, path) = workspace(&cfg);
    let out = stepgate()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("steps.nightly-load.attributes"), "{stdout}");
}

#[test]
fn serve_with_an_invalid_config_exits_1_and_missing_file_too() {
    let (_d, path) = workspace("[server]\nlisten = \"0.0.0.0:1\"\n");
    let out = stepgate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("plain HTTP is only allowed on a loopback address")
    );
    let out = stepgate()
        .args(["check", "--config", "/nonexistent/stepgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // STEPGATE_CONFIG stands in for --config.
    let out = stepgate()
        .arg("check")
        .env("STEPGATE_CONFIG", "/nonexistent/x.toml")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("/nonexistent/x.toml"));
}

#[test]
fn audit_verify_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.jsonl");
    std::fs::write(&p, "").unwrap();
    let out = stepgate()
        .args(["audit", "verify"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 0 records");
    std::fs::write(&p, "{\"v\":1}\n").unwrap();
    let out = stepgate()
        .args(["audit", "verify"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("broken at {}:1: ", p.display())),
        "{stdout}"
    );
}

#[test]
fn help_names_every_command() {
    let out = stepgate().arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    for c in ["serve", "check", "dev", "audit"] {
        assert!(s.contains(c), "{s}");
    }
}

#[tokio::test]
async fn audit_tail_filters_for_people() {
    let h = crate::support::Harness::start().await;
    assert_eq!(h.start_as("alice", "nightly-load", "{}").await.status, 201);
    assert_eq!(h.start_as("victor", "nightly-load", "{}").await.status, 403);
    let out = stepgate()
        .args(["audit", "tail", "--decision", "deny"])
        .arg(&h.audit_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("deny  403 start nightly-load by dev/victor"),
        "{stdout}"
    );
    let out = stepgate()
        .args(["audit", "tail", "--caller", "dev/alice", "--json"])
        .arg(&h.audit_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.lines().all(|l| l.contains("\"sub\":\"alice\"")));
    h.stop().await;
}

#[test]
fn the_sample_policy_tests_pass_and_a_wrong_expectation_fails() {
    let (_d, path) = workspace(&dev_config());
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/policy-tests.toml");
    let out = stepgate()
        .args(["policy", "test", "--config"])
        .arg(&path)
        .arg(&tests)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("14 passed, 0 failed"), "{stdout}");

    let wrong = _d.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        "[[case]]\nname = \"viewers start\"\ncaller = { issuer = \"corp\", sub = \"v\", groups = [\"viewers\"] }\naction = \"start\"\nstep = \"nightly-load\"\nexpect = \"allow\"\n",
    )
    .unwrap();
    let out = stepgate()
        .args(["policy", "test", "--config"])
        .arg(&path)
        .arg(&wrong)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  viewers start: expected allow, got deny (policies: none)"),
        "{stdout}"
    );
}
