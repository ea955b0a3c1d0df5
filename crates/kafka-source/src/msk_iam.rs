//! AWS MSK IAM authentication: OAUTHBEARER tokens signed with the AWS credential chain.
//!
//! librdkafka asks for a token from its own callback thread; signing needs the network
//! (credential refresh), so a background task keeps a fresh token in memory and the callback
//! only reads it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_types::region::Region;
use rdkafka::client::OAuthToken;
use tokio::task::JoinHandle;

use crate::KafkaError;

/// Keeps a signed MSK IAM token fresh in the background.
#[derive(Debug)]
pub struct MskTokenProvider {
    current: Arc<RwLock<Option<(String, i64)>>>,
    refresher: JoinHandle<()>,
}

impl MskTokenProvider {
    /// Signs a first token (so the client can connect at once) and starts the refresher on
    /// the current tokio runtime. `region` defaults to the AWS chain's region.
    pub async fn start(region: Option<String>) -> Result<Self, KafkaError> {
        let region = match region {
            Some(r) => Region::new(r),
            None => aws_config::load_defaults(aws_config::BehaviorVersion::latest())
                .await
                .region()
                .cloned()
                .ok_or_else(|| KafkaError::Token("no AWS region: set kafka.aws_region or AWS_REGION".into()))?,
        };
        let first = aws_msk_iam_sasl_signer::generate_auth_token(region.clone()).await.map_err(|e| KafkaError::Token(e.to_string()))?;
        let current = Arc::new(RwLock::new(Some(first)));
        let shared = current.clone();
        let refresher = tokio::spawn(async move {
            loop {
                let expires_ms = shared.read().ok().and_then(|t| t.as_ref().map(|(_, e)| *e)).unwrap_or(0);
                let now_ms = chrono_now_ms();
                // Refresh at 80% of the remaining lifetime (tokens last 15 minutes), at least every 10 s on failure.
                let wait = ((expires_ms - now_ms) * 4 / 5).clamp(10_000, 600_000) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                match aws_msk_iam_sasl_signer::generate_auth_token(region.clone()).await {
                    Ok(token) => {
                        if let Ok(mut slot) = shared.write() {
                            *slot = Some(token);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, stage = "msk_iam_refresh", "MSK IAM token refresh failed; retrying"),
                }
            }
        });
        Ok(Self { current, refresher })
    }

    /// The current token, for librdkafka's refresh callback (never blocks on the network).
    pub fn token(&self) -> Result<OAuthToken, String> {
        let guard = self.current.read().map_err(|_| "token lock poisoned".to_string())?;
        let (token, lifetime_ms) = guard.clone().ok_or("no MSK IAM token yet")?;
        Ok(OAuthToken { token, principal_name: String::new(), lifetime_ms })
    }
}

impl Drop for MskTokenProvider {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signing is local (SigV4 over static credentials from the environment): no network needed.
    #[tokio::test]
    async fn signs_a_token_and_serves_it_without_blocking() {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let provider = MskTokenProvider::start(Some("eu-west-1".into())).await.unwrap();
        let token = provider.token().unwrap();
        assert!(token.token.len() > 100, "a base64url presigned URL");
        assert!(token.lifetime_ms > chrono_now_ms(), "expires in the future");
    }
}
