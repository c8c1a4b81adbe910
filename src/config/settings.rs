//! The validated configuration types: what the rest of stepgate reads. Built only by
//! `validate.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// A validated configuration; paths are absolute or relative to the working directory.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file this came from.
    pub source: PathBuf,
    /// The listener.
    pub server: ServerSettings,
    /// Folder of `*.cedar` and `schema.cedarschema`.
    pub policies_dir: PathBuf,
    /// Audit log file.
    pub audit_path: PathBuf,
    /// Rotate the audit log at this size.
    pub audit_rotate_bytes: Option<u64>,
    /// Rotate the audit log at this age.
    pub audit_rotate_age: Option<Duration>,
    /// Ring size of the audit journal (0: none).
    pub audit_journal_bytes: u64,
    /// Start even if the audit chain does not verify (command-line flag, not config).
    pub audit_accept_broken_chain: bool,
    /// Trusted issuers, in file order.
    pub issuers: Vec<IssuerSettings>,
    /// Credential providers by name.
    pub credentials: BTreeMap<String, CredentialSettings>,
    /// Steps by name.
    pub steps: BTreeMap<String, StepSettings>,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS files; `None` = plain HTTP on loopback.
    pub tls: Option<TlsFiles>,
    /// Body limit in bytes.
    pub max_body_bytes: usize,
    /// Header read timeout.
    pub header_read_timeout: Duration,
    /// Drain bound on shutdown.
    pub shutdown_grace: Duration,
    /// Upstream call deadline.
    pub upstream_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// Certificate chain and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// One trusted issuer, validated.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// Short name.
    pub name: String,
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted audiences (non-empty).
    pub audiences: Vec<String>,
    /// JWKS URL override.
    pub jwks_uri: Option<String>,
    /// Groups claim name.
    pub groups_claim: String,
    /// Allowed JWS algorithms (names as in JOSE: `RS256`, `ES256`).
    pub algorithms: Vec<String>,
    /// Clock leeway.
    pub leeway: Duration,
    /// `email` only counts when `email_verified` is true.
    pub require_verified_email: bool,
    /// Stale window for keys during an issuer outage.
    pub stale_keys_for: Duration,
    /// Least time between unknown-kid refetches.
    pub min_refetch_interval: Duration,
    /// Maximum token age (from `iat`).
    pub max_token_age: Option<Duration>,
    /// Claims that must equal these values.
    pub required_claims: BTreeMap<String, String>,
}

/// A credential provider's settings.
#[derive(Debug, Clone)]
pub enum CredentialSettings {
    /// Static AWS keys.
    AwsStatic(AwsStaticSettings),
    /// STS AssumeRole.
    AwsAssumeRole(AwsAssumeRoleSettings),
    /// STS AssumeRoleWithWebIdentity.
    AwsWebIdentity(AwsWebIdentitySettings),
    /// The SDK's default chain.
    AwsDefaultChain {
        /// Region.
        region: String,
    },
    /// A Google service-account key file.
    GcpServiceAccount {
        /// Key file.
        key_file: PathBuf,
        /// OAuth scopes.
        scopes: Vec<String>,
    },
    /// Google workload identity federation.
    GcpExternalAccount {
        /// `external_account` config file.
        config_file: PathBuf,
        /// OAuth scopes.
        scopes: Vec<String>,
    },
    /// Google service-account impersonation.
    GcpImpersonate(GcpImpersonateSettings),
    /// The metadata server.
    GcpMetadata {
        /// Endpoint override.
        endpoint: Option<String>,
        /// OAuth scopes (empty: the instance's).
        scopes: Vec<String>,
    },
}

impl CredentialSettings {
    /// The cloud whose APIs these credentials sign for.
    pub fn cloud(&self) -> Cloud {
        match self {
            CredentialSettings::AwsStatic(_)
            | CredentialSettings::AwsAssumeRole(_)
            | CredentialSettings::AwsWebIdentity(_)
            | CredentialSettings::AwsDefaultChain { .. } => Cloud::Aws,
            CredentialSettings::GcpServiceAccount { .. }
            | CredentialSettings::GcpExternalAccount { .. }
            | CredentialSettings::GcpImpersonate(_)
            | CredentialSettings::GcpMetadata { .. } => Cloud::Google,
        }
    }
}

/// A cloud, for matching steps to credential kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// AWS (SigV4).
    Aws,
    /// Google Cloud (OAuth bearer tokens).
    Google,
}

impl Cloud {
    /// For messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS",
            Cloud::Google => "Google Cloud",
        }
    }
}

/// `gcp_impersonate`.
#[derive(Debug, Clone)]
pub struct GcpImpersonateSettings {
    /// Source provider name (a `gcp_*` block).
    pub source: String,
    /// Service account to act as.
    pub target_service_account: String,
    /// Delegation chain.
    pub delegates: Vec<String>,
    /// Token lifetime.
    pub lifetime: Duration,
    /// OAuth scopes.
    pub scopes: Vec<String>,
    /// IAM Credentials endpoint override.
    pub iam_endpoint: Option<String>,
}

/// STS call settings shared by the role kinds.
#[derive(Debug, Clone)]
pub struct StsSettings {
    /// Role to assume.
    pub role_arn: String,
    /// Session name.
    pub session_name: String,
    /// Session length.
    pub duration: Duration,
    /// STS region.
    pub region: String,
    /// STS endpoint override.
    pub endpoint: Option<String>,
}

/// `aws_assume_role`.
#[derive(Debug, Clone)]
pub struct AwsAssumeRoleSettings {
    /// The STS call.
    pub sts: StsSettings,
    /// Source credentials block.
    pub source: String,
    /// External id.
    pub external_id: Option<Secret<String>>,
}

/// `aws_web_identity`.
#[derive(Debug, Clone)]
pub struct AwsWebIdentitySettings {
    /// The STS call.
    pub sts: StsSettings,
    /// Token file.
    pub token_file: PathBuf,
}

/// `aws_static`.
#[derive(Debug, Clone)]
pub struct AwsStaticSettings {
    /// Access key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: Secret<String>,
    /// Session token.
    pub session_token: Option<Secret<String>>,
}

/// A step kind (Cedar attribute `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// AWS Step Functions.
    StepFunctions,
    /// A Dataflow classic template.
    DataflowTemplate,
    /// A Dataflow flex template.
    DataflowFlexTemplate,
}

impl StepKind {
    /// The name used in config and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::StepFunctions => "stepfunctions",
            StepKind::DataflowTemplate => "dataflow_template",
            StepKind::DataflowFlexTemplate => "dataflow_flex_template",
        }
    }
}

/// Where a step's triggers go.
#[derive(Debug, Clone)]
pub enum StepTarget {
    /// A Step Functions state machine.
    StepFunctions {
        /// The parsed state machine ARN.
        arn: StateMachineArn,
        /// Endpoint base URL (`https://states.<region>.amazonaws.com` unless overridden).
        endpoint: http::Uri,
        /// Endpoint of `StartSyncExecution` (`https://sync-states.<region>...` unless overridden).
        sync_endpoint: http::Uri,
        /// Started with `StartSyncExecution`.
        sync: bool,
    },
    /// A Dataflow template (classic or flex).
    Dataflow(DataflowTarget),
}

/// Where a Dataflow step launches.
#[derive(Debug, Clone)]
pub struct DataflowTarget {
    /// Endpoint base URL (`https://dataflow.googleapis.com` unless overridden).
    pub endpoint: http::Uri,
    /// Project id.
    pub project: String,
    /// Regional endpoint location.
    pub location: String,
    /// The template.
    pub template: DataflowTemplate,
    /// Job names start with `<prefix>-`.
    pub job_name_prefix: String,
    /// The launch `environment`, as configured.
    pub environment: serde_json::Map<String, serde_json::Value>,
}

/// A classic or flex template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataflowTemplate {
    /// `templates.launch?gcsPath=`.
    Classic {
        /// `gs://` path.
        gcs_path: String,
    },
    /// `flexTemplates.launch` with `containerSpecGcsPath`.
    Flex {
        /// `gs://` path of the spec.
        container_spec_gcs_path: String,
    },
}

/// `arn:<partition>:states:<region>:<account>:stateMachine:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMachineArn {
    /// The whole ARN.
    pub arn: String,
    /// Partition (`aws`, `aws-cn`, ...).
    pub partition: String,
    /// Region.
    pub region: String,
    /// Account id.
    pub account: String,
    /// State machine name.
    pub name: String,
}

impl StateMachineArn {
    /// Parses a state machine ARN.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [
                "arn",
                partition,
                "states",
                region,
                account,
                "stateMachine",
                name,
            ] if !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !name.is_empty() =>
            {
                Ok(Self {
                    arn: s.to_string(),
                    partition: partition.to_string(),
                    region: region.to_string(),
                    account: account.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "`{s}` is not a state machine ARN (arn:aws:states:<region>:<account>:stateMachine:<name>)"
            )),
        }
    }

    /// The ARN prefix every execution of this machine has: `arn:..:execution:<name>:`.
    pub fn execution_prefix(&self) -> String {
        format!(
            "arn:{}:states:{}:{}:execution:{}:",
            self.partition, self.region, self.account, self.name
        )
    }
}

/// A step attribute value (Cedar: String, Long, Bool or Set of those).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string.
    String(String),
    /// An integer.
    Long(i64),
    /// A boolean.
    Bool(bool),
    /// A set.
    Set(Vec<AttrValue>),
}

/// One step, validated.
#[derive(Debug, Clone)]
pub struct StepSettings {
    /// Step name.
    pub name: String,
    /// Pipeline (Cedar parent).
    pub pipeline: String,
    /// Kind.
    pub kind: StepKind,
    /// Upstream target.
    pub target: StepTarget,
    /// Credential provider name (exists in `Settings::credentials`).
    pub credentials: String,
    /// Policy-visible attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// JSON Schema for the start input.
    pub input_schema: Option<PathBuf>,
    /// Pinned input fields.
    pub pinned: serde_json::Map<String, serde_json::Value>,
    /// Rate limit per caller.
    pub rate_limit: Option<RateLimit>,
    /// Input fields recorded in clear in the audit log.
    pub audit_input_fields: Vec<String>,
}

/// A token bucket: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_minute: std::num::NonZeroU32,
    /// Bucket size.
    pub burst: std::num::NonZeroU32,
}
