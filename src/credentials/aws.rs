//! AWS credential providers: static keys, STS AssumeRole (aws-config's `AssumeRoleProvider`),
//! STS AssumeRoleWithWebIdentity (the STS client of aws-sdk-sts, token file re-read at each
//! refresh) and the SDK's default chain. STS calls go through the SDK's own rustls (ring) HTTP
//! client; every endpoint can be overridden.

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls;
use aws_types::SdkConfig;
use aws_types::region::Region;
use futures_util::future::BoxFuture;

use super::{AwsCredentialProvider, Cached};
use crate::config::{
    AwsAssumeRoleSettings, AwsStaticSettings, AwsWebIdentitySettings, StsSettings,
};

/// What every SDK-backed provider shares: the HTTP client.
#[derive(Clone)]
pub struct SdkDeps {
    http: aws_smithy_runtime_api::client::http::SharedHttpClient,
}

impl std::fmt::Debug for SdkDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SdkDeps")
    }
}

impl SdkDeps {
    /// The SDK's hyper + rustls client with the ring provider (one TLS provider process-wide).
    pub fn new() -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        Self { http }
    }

    fn sdk_config(
        &self,
        region: &str,
        endpoint: Option<&str>,
        creds: Option<SharedCredentialsProvider>,
    ) -> SdkConfig {
        let mut b = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .http_client(self.http.clone())
            .time_source(aws_smithy_async::time::SystemTimeSource::new())
            .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new());
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        if let Some(c) = creds {
            b = b.credentials_provider(c);
        }
        b.build()
    }
}

impl Default for SdkDeps {
    fn default() -> Self {
        Self::new()
    }
}

fn describe(e: &dyn std::error::Error) -> String {
    crate::http_client::error_chain(e)
}

/// `aws_static`: keys from the config file.
#[derive(Debug)]
pub struct StaticProvider {
    creds: Credentials,
}

impl StaticProvider {
    /// From settings.
    pub fn new(s: &AwsStaticSettings) -> Self {
        Self {
            creds: Credentials::new(
                s.access_key_id.clone(),
                s.secret_access_key.expose().clone(),
                s.session_token.as_ref().map(|t| t.expose().clone()),
                None,
                "stepgate-aws-static",
            ),
        }
    }
}

impl AwsCredentialProvider for StaticProvider {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(async move { Ok(self.creds.clone()) })
    }
}

/// Lets the SDK use one of our cached providers as source credentials.
#[derive(Debug)]
struct FromCached(Arc<Cached>);

impl ProvideCredentials for FromCached {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            self.0
                .get()
                .await
                .map_err(aws_credential_types::provider::error::CredentialsError::provider_error)
        })
    }
}

/// `aws_assume_role`: STS AssumeRole signed with the source provider's credentials.
pub struct AssumeRole {
    settings: AwsAssumeRoleSettings,
    source: Arc<Cached>,
    sdk: SdkDeps,
    provider: tokio::sync::OnceCell<aws_config::sts::AssumeRoleProvider>,
}

impl std::fmt::Debug for AssumeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumeRole")
            .field("role_arn", &self.settings.sts.role_arn)
            .finish()
    }
}

impl AssumeRole {
    /// A role assumed with `source`'s credentials.
    pub fn new(settings: AwsAssumeRoleSettings, source: Arc<Cached>, sdk: SdkDeps) -> Self {
        Self {
            settings,
            source,
            sdk,
            provider: tokio::sync::OnceCell::new(),
        }
    }
}

impl AwsCredentialProvider for AssumeRole {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(async move {
            let sts: &StsSettings = &self.settings.sts;
            let provider = self
                .provider
                .get_or_init(|| async {
                    let conf = self.sdk.sdk_config(
                        &sts.region,
                        sts.endpoint.as_deref(),
                        Some(SharedCredentialsProvider::new(FromCached(
                            self.source.clone(),
                        ))),
                    );
                    let mut b = aws_config::sts::AssumeRoleProvider::builder(sts.role_arn.clone())
                        .session_name(sts.session_name.clone())
                        .session_length(sts.duration)
                        .configure(&conf);
                    if let Some(id) = &self.settings.external_id {
                        b = b.external_id(id.expose().clone());
                    }
                    b.build().await
                })
                .await;
            provider
                .provide_credentials()
                .await
                .map_err(|e| describe(&e))
        })
    }
}

/// `aws_web_identity`: STS AssumeRoleWithWebIdentity with the token file's current token.
pub struct WebIdentity {
    settings: AwsWebIdentitySettings,
    client: aws_sdk_sts::Client,
}

impl std::fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.settings.sts.role_arn)
            .finish()
    }
}

impl WebIdentity {
    /// From settings.
    pub fn new(settings: AwsWebIdentitySettings, sdk: SdkDeps) -> Self {
        // The call is unsigned (the token is the proof), so no credentials are configured.
        let conf = sdk.sdk_config(&settings.sts.region, settings.sts.endpoint.as_deref(), None);
        let client = aws_sdk_sts::Client::new(&conf);
        Self { settings, client }
    }
}

impl AwsCredentialProvider for WebIdentity {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(async move {
            let path = &self.settings.token_file;
            let token = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read token file `{}`: {e}", path.display()))?;
            if token.trim().is_empty() {
                return Err(format!("token file `{}` is empty", path.display()));
            }
            let sts = &self.settings.sts;
            let out = self
                .client
                .assume_role_with_web_identity()
                .role_arn(&sts.role_arn)
                .role_session_name(&sts.session_name)
                .web_identity_token(token.trim())
                .duration_seconds(i32::try_from(sts.duration.as_secs()).unwrap_or(3600))
                .send()
                .await
                .map_err(|e| describe(&e))?;
            let c = out.credentials.ok_or("STS answered without credentials")?;
            let expiry =
                std::time::SystemTime::try_from(c.expiration).map_err(|e| e.to_string())?;
            Ok(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                Some(c.session_token),
                Some(expiry),
                "stepgate-web-identity",
            ))
        })
    }
}

/// `aws_default_chain`: environment, profile, web identity from the environment, ECS, IMDS.
pub struct DefaultChain {
    region: String,
    sdk: SdkDeps,
    chain:
        tokio::sync::OnceCell<aws_config::default_provider::credentials::DefaultCredentialsChain>,
}

impl std::fmt::Debug for DefaultChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DefaultChain")
    }
}

impl DefaultChain {
    /// The chain for `region`.
    pub fn new(region: String, sdk: SdkDeps) -> Self {
        Self {
            region,
            sdk,
            chain: tokio::sync::OnceCell::new(),
        }
    }
}

impl AwsCredentialProvider for DefaultChain {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(async move {
            let chain = self
                .chain
                .get_or_init(|| async {
                    let conf = aws_config::provider_config::ProviderConfig::default()
                        .with_http_client(self.sdk.http.clone())
                        .with_region(Some(Region::new(self.region.clone())));
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .configure(conf)
                        .build()
                        .await
                })
                .await;
            chain.provide_credentials().await.map_err(|e| describe(&e))
        })
    }
}
