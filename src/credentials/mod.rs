//! Credentials: named providers the forward stage signs with. Callers never hold them.

pub mod aws;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::CredentialSettings;

/// Why credentials are unusable (fail closed: 503).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    /// The provider is not configured (a step names a missing provider).
    #[error("credentials `{0}` are not configured")]
    NotConfigured(String),
    /// The provider could not produce credentials.
    #[error("credentials `{name}` unavailable: {detail}")]
    Unavailable {
        /// Provider name.
        name: String,
        /// Why.
        detail: String,
    },
}

/// Provides AWS credentials (static now; STS-backed and cached in later kinds).
pub trait AwsCredentialProvider: Send + Sync + std::fmt::Debug {
    /// Current credentials.
    fn credentials(
        &self,
    ) -> BoxFuture<'_, Result<aws_credential_types::Credentials, CredentialsError>>;
}

/// All configured providers by name.
#[derive(Debug, Default, Clone)]
pub struct CredentialStore {
    aws: BTreeMap<String, Arc<dyn AwsCredentialProvider>>,
}

impl CredentialStore {
    /// Builds every configured provider.
    pub fn from_settings(settings: &BTreeMap<String, CredentialSettings>) -> Self {
        let mut aws: BTreeMap<String, Arc<dyn AwsCredentialProvider>> = BTreeMap::new();
        for (name, s) in settings {
            match s {
                CredentialSettings::AwsStatic(st) => {
                    aws.insert(name.clone(), Arc::new(aws::StaticProvider::new(st)));
                }
            }
        }
        Self { aws }
    }

    /// AWS credentials of a named provider.
    pub async fn aws(
        &self,
        name: &str,
    ) -> Result<aws_credential_types::Credentials, CredentialsError> {
        let p = self
            .aws
            .get(name)
            .ok_or_else(|| CredentialsError::NotConfigured(name.to_string()))?;
        p.credentials().await
    }
}
