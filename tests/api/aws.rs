//! The DynamoDB + SQS emulator (moto server) that scripts/test.sh runs, reached with the
//! real AWS SDK clients.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::helpers::eventually;

pub const REGION: &str = "us-east-1";

/// The shared emulator's endpoint.
pub fn endpoint() -> String {
    std::env::var("TEST_AWS_ENDPOINT")
        .expect("TEST_AWS_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the emulator")
}

pub async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

/// Environment that puts a node's users' data in `table` on the emulator at `endpoint`
/// (created by the node): what every member of a test cluster must share.
pub fn shared_store_env<'a>(endpoint: &'a str, table: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("PLAYSTATE_STORE__BACKEND", "dynamodb"),
        ("PLAYSTATE_STORE__DYNAMODB__TABLE", table),
        ("PLAYSTATE_STORE__DYNAMODB__CREATE_TABLE", "true"),
        ("PLAYSTATE_AWS__ENDPOINT", endpoint),
        ("PLAYSTATE_AWS__REGION", REGION),
        ("PLAYSTATE_AWS__ACCESS_KEY_ID", "test"),
        ("PLAYSTATE_AWS__SECRET_ACCESS_KEY", "test"),
    ]
}

/// A table and a queue of this test's own, on an emulator, and the node config using them.
pub struct AwsFixture {
    pub endpoint: String,
    pub table: String,
    pub queue: String,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsFixture {
    pub async fn new(endpoint: &str) -> AwsFixture {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let sdk = sdk(endpoint).await;
        AwsFixture {
            endpoint: endpoint.to_owned(),
            table: format!("playstate-{suffix}"),
            queue: format!("bi-{suffix}"),
            dynamo: aws_sdk_dynamodb::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
        }
    }

    /// Environment for a node whose users' data is in this fixture's table.
    pub fn store_env(&self) -> Vec<(&'static str, &str)> {
        shared_store_env(&self.endpoint, &self.table)
    }

    /// Node configuration: DynamoDB store and SQS events on this fixture, created by the
    /// node at start.
    pub fn node_config(&self, extra: &str) -> String {
        format!(
            r#"
[store]
backend = "dynamodb"
[store.dynamodb]
table = "{table}"
create_table = true
{events}
{aws}
{extra}
"#,
            table = self.table,
            events = self.events_section(),
            aws = self.aws_section(),
        )
    }

    /// The `[events]` sections that send BI events to this fixture's queue.
    pub fn events_section(&self) -> String {
        format!(
            r#"[events]
sink = "sqs"
[events.sqs]
queue_name = "{queue}"
create_queue = true"#,
            queue = self.queue,
        )
    }

    /// The `[aws]` section that points a node at this fixture's emulator.
    pub fn aws_section(&self) -> String {
        format!(
            r#"[aws]
region = "{REGION}"
endpoint = "{endpoint}"
access_key_id = "test"
secret_access_key = "test"
timeout = "1s""#,
            endpoint = self.endpoint,
        )
    }

    /// Stored progress of a user's asset, read straight from DynamoDB.
    pub async fn stored_progress(&self, user: &str, asset: &str) -> Option<u64> {
        let item = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key("PK", AttributeValue::S(format!("USER#{user}")))
            .key("SK", AttributeValue::S(format!("PROGRESS#{asset}")))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item?;
        item.get("progress")?.as_n().ok()?.parse().ok()
    }

    pub async fn queue_url(&self) -> String {
        self.sqs
            .get_queue_url()
            .queue_name(&self.queue)
            .send()
            .await
            .expect("GetQueueUrl")
            .queue_url
            .expect("queue url")
    }

    /// Receives (and deletes) every message currently on the queue.
    pub async fn drain_events(&self) -> Vec<serde_json::Value> {
        let url = self.queue_url().await;
        let mut events = Vec::new();
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("ReceiveMessage");
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return events;
            }
            for message in messages {
                events.push(
                    serde_json::from_str(message.body().unwrap_or("null")).expect("event JSON"),
                );
                self.sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("DeleteMessage");
            }
        }
    }

    /// Events received until at least `count` have arrived (polling), then whatever else
    /// is already there.
    pub async fn events(&self, count: usize) -> Vec<serde_json::Value> {
        let started = std::time::Instant::now();
        let mut seen = Vec::new();
        while seen.len() < count {
            assert!(
                started.elapsed() < super::helpers::DEADLINE,
                "timed out waiting for {count} events on {}; got {seen:?}",
                self.queue
            );
            seen.extend(self.drain_events().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen.extend(self.drain_events().await);
        seen
    }

    /// Creates the table (the way a node does) and the queue again, as on an emulator
    /// that lost its state.
    pub async fn recreate(&self) {
        playstate::store::dynamo::DynamoStore::connect(
            &sdk(&self.endpoint).await,
            &self.table,
            true,
        )
        .await
        .expect("create the table");
        self.sqs
            .create_queue()
            .queue_name(&self.queue)
            .send()
            .await
            .expect("CreateQueue");
    }
}

/// A moto server of a test's own, for tests that stop it.
pub struct PrivateEmulator {
    child: Option<Child>,
    pub port: u16,
}

impl PrivateEmulator {
    pub async fn start() -> PrivateEmulator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        PrivateEmulator::start_on(port).await
    }

    pub async fn start_on(port: u16) -> PrivateEmulator {
        let server = std::env::var("TEST_MOTO_SERVER")
            .expect("TEST_MOTO_SERVER is not set: run the tests with scripts/test.sh");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let emulator = PrivateEmulator {
            child: Some(child),
            port,
        };
        let url = format!("{}/moto-api/", emulator.endpoint());
        eventually("the private emulator answers", || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        emulator
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the emulator (its state is gone with it) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}
