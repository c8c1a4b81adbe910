//! AWS credential providers.

use futures_util::future::BoxFuture;

use super::{AwsCredentialProvider, CredentialsError};
use crate::config::AwsStaticSettings;

/// `aws_static`: keys from the config file.
#[derive(Debug)]
pub struct StaticProvider {
    creds: aws_credential_types::Credentials,
}

impl StaticProvider {
    /// From settings.
    pub fn new(s: &AwsStaticSettings) -> Self {
        Self {
            creds: aws_credential_types::Credentials::new(
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
    fn credentials(
        &self,
    ) -> BoxFuture<'_, Result<aws_credential_types::Credentials, CredentialsError>> {
        Box::pin(async move { Ok(self.creds.clone()) })
    }
}
