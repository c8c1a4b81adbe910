//! Configuration: the raw TOML shapes (DESIGN.md §3), parsed with every problem reported.
//!
//! `mod.rs` holds the serde structs exactly as users write them; `validate.rs` turns them,
//! without any I/O, into the typed [`Settings`] the rest of stepgate uses.

mod settings;
mod validate;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::secret::Secret;

pub use settings::{
    AttrValue, AwsAssumeRoleSettings, AwsStaticSettings, AwsWebIdentitySettings, Cloud,
    CredentialSettings, DataflowTarget, DataflowTemplate, GcpImpersonateSettings, IssuerSettings,
    RateLimit, ServerSettings, Settings, StateMachineArn, StepKind, StepSettings, StepTarget,
    StsSettings, TlsFiles,
};
pub(crate) use validate::secure_or_loopback;
pub use validate::{CLOUD_PLATFORM_SCOPE, Problem, Problems, load, parse, valid_dataflow_job_name};

/// `[server]`: the listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on, `host:port`. Default `127.0.0.1:8443`.
    pub listen: Option<String>,
    /// PEM certificate chain. With `tls_key`; both absent means plain HTTP (loopback only).
    pub tls_cert: Option<String>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<String>,
    /// Largest request body accepted; bigger ones get 413. Default 262144.
    pub max_body_bytes: Option<u64>,
    /// Time a client has to send its request headers. Default `10s`.
    pub header_read_timeout: Option<String>,
    /// Time in-flight requests get to finish on SIGTERM/SIGINT. Default `30s`.
    pub shutdown_grace: Option<String>,
    /// Deadline for one upstream call. Default `30s`.
    pub upstream_timeout: Option<String>,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed. Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `[policies]`: where the Cedar policies and schema live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    /// Folder with `*.cedar` files and `schema.cedarschema`. Default `policies`.
    pub dir: Option<String>,
}

/// `[audit]`: the write-ahead decision log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// JSON-lines log file. Default `audit/stepgate-audit.jsonl`.
    pub path: Option<String>,
    /// Rotate the live file at this size in bytes. Default 134217728 (128 MiB); 0 = never.
    pub rotate_bytes: Option<u64>,
    /// Rotate the live file at this age (`"24h"`). Default: never.
    pub rotate_age: Option<String>,
    /// Size of the journal's ring in bytes, where group commits become durable (beside the
    /// live file, `<path>.journal`). Default 8388608 (8 MiB); 0 = no journal (each batch is
    /// synced in the live file); else at least 16384.
    pub journal_bytes: Option<u64>,
}

/// One `[[issuers]]` block: a trusted OIDC issuer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// Short name; callers become `Caller::"<name>/<sub>"`.
    pub name: String,
    /// Issuer URL; must equal the token's `iss` exactly.
    pub issuer: String,
    /// Accepted audiences; a token's `aud` must contain at least one.
    pub audiences: Vec<String>,
    /// JWKS URL; default from OIDC discovery.
    pub jwks_uri: Option<String>,
    /// Claim whose string (or string array) value gives the caller's Cedar groups. Default `groups`.
    pub groups_claim: Option<String>,
    /// Allowed signature algorithms. Default `["RS256", "ES256"]`.
    pub algorithms: Option<Vec<String>>,
    /// Clock leeway for `exp`/`nbf`/`iat`. Default `60s`.
    pub leeway: Option<String>,
    /// Whether `email` counts only when `email_verified` is true. Default true.
    pub require_verified_email: Option<bool>,
    /// How long cached keys keep serving past their expiry while the issuer is down. Default `1h`.
    pub stale_keys_for: Option<String>,
    /// Least time between two key fetches caused by an unknown `kid`. Default `5s`.
    pub min_refetch_interval: Option<String>,
    /// Refuse tokens issued (`iat`) longer ago than this. Default: no limit.
    pub max_token_age: Option<String>,
    /// Claims that must have exactly these string values (`{ repository_owner = "acme" }`);
    /// nested claims by dotted name (`"kubernetes.io.namespace"`).
    pub required_claims: Option<BTreeMap<String, String>>,
}

/// One `[credentials.NAME]` block: a credential provider, chosen by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawCredentials {
    /// Long-lived AWS keys from the config file.
    AwsStatic(RawAwsStatic),
    /// STS AssumeRole with another provider's credentials.
    AwsAssumeRole(RawAwsAssumeRole),
    /// STS AssumeRoleWithWebIdentity with a token file (EKS IRSA, GitHub Actions' OIDC trust).
    AwsWebIdentity(RawAwsWebIdentity),
    /// The AWS SDK's default chain: environment, profile, ECS, instance metadata.
    AwsDefaultChain(RawAwsDefaultChain),
    /// A Google service-account key file (self-signed JWTs, AIP-4111).
    GcpServiceAccount(RawGcpServiceAccount),
    /// Google workload identity federation: an `external_account` config file (AIP-4117).
    GcpExternalAccount(RawGcpExternalAccount),
    /// Another Google provider's credentials -> `generateAccessToken` for a per-step account.
    GcpImpersonate(RawGcpImpersonate),
    /// The GCE/GKE metadata server's service account.
    GcpMetadata(RawGcpMetadata),
}

/// `kind = "gcp_service_account"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcpServiceAccount {
    /// Service-account key file (JSON, as the Cloud console downloads it).
    pub key_file: String,
    /// OAuth scopes. Default `["https://www.googleapis.com/auth/cloud-platform"]`.
    pub scopes: Option<Vec<String>>,
}

/// `kind = "gcp_external_account"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcpExternalAccount {
    /// The `external_account` JSON (`gcloud iam workload-identity-pools create-cred-config`);
    /// its `token_url` and `service_account_impersonation_url` are the endpoints used.
    pub config_file: String,
    /// OAuth scopes. Default cloud-platform.
    pub scopes: Option<Vec<String>>,
}

/// `kind = "gcp_impersonate"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcpImpersonate {
    /// Name of the `[credentials.NAME]` block (a `gcp_*` kind) whose token calls IAM.
    pub source: String,
    /// Email of the service account to act as.
    pub target_service_account: String,
    /// Delegation chain, if any.
    #[serde(default)]
    pub delegates: Vec<String>,
    /// Token lifetime (`"1h"` at most). Default `1h`.
    pub lifetime: Option<String>,
    /// OAuth scopes. Default cloud-platform.
    pub scopes: Option<Vec<String>>,
    /// IAM Credentials endpoint override (tests, private links). Default
    /// `https://iamcredentials.googleapis.com`. Needs a file-based source.
    pub iam_endpoint: Option<String>,
}

/// `kind = "gcp_metadata"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGcpMetadata {
    /// Metadata server override. Default `http://metadata.google.internal`.
    pub endpoint: Option<String>,
    /// OAuth scopes. Default: the instance's.
    pub scopes: Option<Vec<String>>,
}

/// `kind = "aws_assume_role"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsAssumeRole {
    /// Role to assume.
    pub role_arn: String,
    /// Name of the `[credentials.NAME]` block whose credentials call STS.
    pub source: String,
    /// External id the role's trust policy requires.
    pub external_id: Option<Secret<String>>,
    /// Session name (visible in CloudTrail). Default `stepgate`.
    pub session_name: Option<String>,
    /// Session length (`"15m"` .. `"12h"`). Default `1h`.
    pub duration: Option<String>,
    /// STS region. Default `us-east-1`.
    pub region: Option<String>,
    /// STS endpoint override (tests, private links).
    pub sts_endpoint: Option<String>,
}

/// `kind = "aws_web_identity"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsWebIdentity {
    /// Role to assume.
    pub role_arn: String,
    /// File holding the web identity token (re-read at every refresh).
    pub token_file: String,
    /// Session name. Default `stepgate`.
    pub session_name: Option<String>,
    /// Session length. Default `1h`.
    pub duration: Option<String>,
    /// STS region. Default `us-east-1`.
    pub region: Option<String>,
    /// STS endpoint override.
    pub sts_endpoint: Option<String>,
}

/// `kind = "aws_default_chain"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsDefaultChain {
    /// Region for the chain's own calls. Default `us-east-1`.
    pub region: Option<String>,
}

/// `kind = "aws_static"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsStatic {
    /// AWS access key id.
    pub access_key_id: String,
    /// AWS secret access key.
    pub secret_access_key: Secret<String>,
    /// Session token, for temporary credentials.
    pub session_token: Option<Secret<String>>,
    /// Region used when a step gives none. Default: the step's ARN region.
    pub region: Option<String>,
}

/// One `[steps.NAME]` block: a pipeline step callers can trigger.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Pipeline the step belongs to (its Cedar parent).
    pub pipeline: String,
    /// `stepfunctions`, `dataflow_template` or `dataflow_flex_template`.
    pub kind: String,
    /// For `stepfunctions`: the state machine ARN.
    pub state_machine_arn: Option<String>,
    /// For `stepfunctions`: an EXPRESS machine started with `StartSyncExecution` (the answer
    /// carries the result). Default false.
    #[serde(default)]
    pub sync: bool,
    /// For Dataflow kinds: the Google Cloud project id.
    pub project: Option<String>,
    /// For Dataflow kinds: the regional endpoint's location (`europe-west1`).
    pub location: Option<String>,
    /// For `dataflow_template`: the classic template (`gs://bucket/path`).
    pub gcs_path: Option<String>,
    /// For `dataflow_flex_template`: the flex template spec (`gs://bucket/path.json`).
    pub container_spec_gcs_path: Option<String>,
    /// For Dataflow kinds: every job of this step is named `<prefix>-...`; describe, stop and
    /// list only see such jobs. Default: the step name in Dataflow's alphabet.
    pub job_name_prefix: Option<String>,
    /// For Dataflow kinds: the launch's `environment` (RuntimeEnvironment or
    /// FlexTemplateRuntimeEnvironment, Google's field names), fixed by the step.
    #[serde(default)]
    pub environment: BTreeMap<String, toml::Value>,
    /// Name of a `[credentials.NAME]` block used to sign the forward.
    pub credentials: String,
    /// Override of the upstream endpoint (tests, private links).
    pub endpoint: Option<String>,
    /// Free attributes, visible to policies as `resource.<name>`.
    #[serde(default)]
    pub attributes: BTreeMap<String, toml::Value>,
    /// JSON Schema file the start input must satisfy.
    pub input_schema: Option<String>,
    /// Input fields the proxy sets; a caller sending another value is refused.
    #[serde(default)]
    pub pinned: BTreeMap<String, toml::Value>,
    /// Per-caller rate limit on this step.
    pub rate_limit: Option<RawRateLimit>,
    /// Input fields recorded in clear in the audit log (the rest only as the body's SHA-256).
    #[serde(default)]
    pub audit_input_fields: Vec<String>,
}

/// `rate_limit = { per_minute = 60, burst = 10 }`: a token bucket per caller and step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Bucket size (requests allowed at once). Default: `per_minute`.
    pub burst: Option<u32>,
}
