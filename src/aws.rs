//! Shared AWS SDK configuration: region, optional endpoint override (local emulators),
//! optional static credentials, and timeouts.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;

use crate::config::AwsConfig;

pub async fn sdk_config(aws: &AwsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(aws.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(aws.timeout.min(Duration::from_secs(2)))
                .operation_attempt_timeout(aws.timeout)
                .build(),
        );
    if !aws.endpoint.is_empty() {
        loader = loader.endpoint_url(&aws.endpoint);
    }
    if !aws.access_key_id.is_empty() {
        // Without static credentials the SDK walks the default chain (env, profile, IMDS),
        // which is right in AWS and slow offline.
        loader = loader.credentials_provider(Credentials::new(
            aws.access_key_id.clone(),
            aws.secret_access_key.clone(),
            None,
            None,
            "playstate-config",
        ));
    }
    loader.load().await
}
