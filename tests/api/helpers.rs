//! Starting nodes and talking to them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// How long a test polls for something that should happen within a second or two.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A running node. Stopped with SIGTERM when dropped.
pub struct TestNode {
    child: Option<Child>,
    pub addr: String,
    /// The cluster listener, `HOST:PORT`.
    pub cluster_addr: String,
    /// Extra command-line arguments and environment, kept for restarts.
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    config_file: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    /// With `TEST_THROUGH_PEER` set: the node that owns every shard, behind this one.
    owner: Option<Box<TestNode>>,
    _dir: Option<tempfile::TempDir>,
}

/// Runs `command` to its end: its exit status and everything it printed.
fn run_output(mut command: Command) -> (std::process::ExitStatus, String) {
    let output = command.output().expect("run playstate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// `TEST_THROUGH_PEER=1`: every `TestNode::spawn` is a two-node cluster, and the test
/// talks to the node that owns no shard, so every command is forwarded to the other.
fn through_peer() -> bool {
    std::env::var_os("TEST_THROUGH_PEER").is_some()
}

impl TestNode {
    /// A node with the compiled-in defaults plus `config` (TOML).
    pub async fn spawn(config: &str) -> TestNode {
        if through_peer() {
            return TestNode::spawn_behind_entry(config).await;
        }
        TestNode::spawn_with(config, &[], &[]).await
    }

    /// An owner of every shard, and the node returned, joined to it and then drained so
    /// that it owns none: whatever the test asks of it is forwarded.
    /// The two share a DynamoDB table on the test emulator, as the members of any cluster
    /// must share their users' store.
    async fn spawn_behind_entry(config: &str) -> TestNode {
        let (endpoint, table) = (super::aws::endpoint(), format!("playstate-{}", user()));
        let store = super::aws::shared_store_env(&endpoint, &table);
        let owner = TestNode::spawn_with(config, &["--node-id".into(), "1".into()], &store).await;
        owner.wait_ready().await;
        let args = ["--node-id", "2", "--join", &owner.cluster_addr].map(String::from);
        let mut entry = TestNode::spawn_with(config, &args, &store).await;
        entry.forget_arg("--join");
        entry.drain_into(owner).await
    }

    /// Waits until the node is a member with a leader; asks the cluster listener, so that
    /// the player listener's metrics count no 503 from `/ready`.
    async fn wait_ready(&self) {
        eventually("the node to join its cluster", || async {
            let status = self.cluster_status().await?;
            let me = status["node_id"].clone();
            let member = status["members"].as_array()?.iter().any(|m| m["id"] == me);
            (member && !status["leader"].is_null()).then_some(())
        })
        .await;
    }

    /// `GET /cluster/admin/status` of a node with no cluster secret; `None` until it answers.
    async fn cluster_status(&self) -> Option<Value> {
        let url = format!("http://{}/cluster/admin/status", self.cluster_addr);
        self.client.get(url).send().await.ok()?.json().await.ok()
    }

    /// Drains this node (node 2) so that `owner` (node 1) owns every shard, and keeps it.
    async fn drain_into(mut self, owner: TestNode) -> TestNode {
        self.wait_ready().await;
        let drained = self
            .client
            .post(format!("http://{}/cluster/admin/drain", owner.cluster_addr))
            .json(&serde_json::json!({ "node_id": 2 }))
            .send()
            .await
            .expect("drain the entry node");
        assert_eq!(drained.status(), 200, "draining the entry node");
        // Every shard with the owner and no move in flight: a batch the leader began
        // before the drain would otherwise land on this node after the test started.
        eventually("the owner to own every shard, nothing moving", || async {
            let status = owner.cluster_status().await?;
            let settled = status["shards"]["1"] == 1024
                && status["shards"]["2"] == 0
                && status["handoffs"].as_array()?.is_empty();
            let entry = self.metric("playstate_cluster_shards_owned").await;
            (settled && entry == 0.0).then_some(())
        })
        .await;
        self.owner = Some(Box::new(owner));
        self
    }

    /// Where this node's users' data lives: its own data dir, or the owner's.
    pub fn store_dir(&self) -> &Path {
        match &self.owner {
            Some(owner) => &owner.data_dir,
            None => &self.data_dir,
        }
    }

    /// A node with extra arguments (e.g. `--node-id`, `--join`) and environment.
    pub async fn spawn_with(config: &str, args: &[String], env: &[(&str, &str)]) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let config_file = dir.path().join("node.toml");
        std::fs::write(&config_file, config).expect("write config");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut node = TestNode::start(&data_dir, &config_file, args.to_vec(), env).await;
        node._dir = Some(dir);
        node
    }

    fn command(
        data_dir: &Path,
        config_file: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_playstate"));
        if !args.iter().any(|a| a == "--listen") {
            command.args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"]);
        }
        command
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(config_file)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)));
        command
    }

    async fn start(
        data_dir: &Path,
        config_file: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> TestNode {
        let mut child = TestNode::command(data_dir, config_file, &args, &env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start playstate");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            // Bytes, not `lines()`: a line that is not UTF-8 must not end the reading, or
            // the node would block once its stdout pipe is full.
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                if let Ok(json) = serde_json::from_str::<Value>(&line)
                    && json["message"] == "listening"
                {
                    let addrs = (
                        json["addr"].as_str().unwrap_or_default().to_owned(),
                        json["cluster_addr"].as_str().unwrap_or_default().to_owned(),
                    );
                    let _ = addr_tx.send(addrs);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (addr, cluster_addr) = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "node did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        TestNode {
            child: Some(child),
            addr: format!("http://{addr}"),
            cluster_addr,
            args,
            env,
            // Idle connections are dropped well before the node's keep-alive timeout
            // (5 s) closes them: reusing one the node is closing fails the request
            // (`IncompleteMessage`), e.g. after a test blocked on a CLI run.
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .expect("a client"),
            data_dir: data_dir.to_path_buf(),
            config_file: config_file.to_path_buf(),
            logs,
            owner: None,
            _dir: None,
        }
    }

    /// SIGTERM, wait for a clean exit (asserted), and start again on the same data.
    pub async fn restart(mut self) -> TestNode {
        self.stop();
        match self.owner.take() {
            // Both restart: the owner alone has no Raft majority until the entry is back.
            Some(owner) => {
                let owner = Box::pin((*owner).restart()).await;
                let entry = self.start_again().await;
                entry.drain_into(owner).await
            }
            None => self.start_again().await,
        }
    }

    /// Starts a stopped node again on its data dir, with the same arguments (less those
    /// `drop_args` names, e.g. `--join`, with their values).
    pub async fn start_again(mut self) -> TestNode {
        assert!(self.child.is_none(), "the node is still running");
        // The same ports: the other members know this node by them (a whole cluster
        // restarted on new ports could not find itself again).
        let player = self.addr.trim_start_matches("http://").to_owned();
        let mut args = vec![
            "--listen".to_owned(),
            player,
            "--cluster-listen".to_owned(),
            self.cluster_addr.clone(),
        ];
        args.extend(self.args.iter().cloned());
        let env = std::mem::take(&mut self.env);
        let mut next = TestNode::start(&self.data_dir, &self.config_file, args, env).await;
        next.args = std::mem::take(&mut self.args);
        next._dir = self._dir.take();
        next
    }

    /// Starts the binary on this (stopped) node's data dir and waits for it to exit;
    /// for a node that must refuse to start. Returns the exit status and the output.
    pub fn run_to_exit(&self) -> (std::process::ExitStatus, String) {
        assert!(self.child.is_none(), "the node is still running");
        run_output(TestNode::command(
            &self.data_dir,
            &self.config_file,
            &self.args,
            &self.env,
        ))
    }

    /// Runs the binary with `config`, `args` and `env` on a fresh data dir until it exits;
    /// for a node that must refuse to start. Returns the exit status and the output.
    pub fn run_once(
        config: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> (std::process::ExitStatus, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_file = dir.path().join("node.toml");
        std::fs::write(&config_file, config).expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run_output(TestNode::command(
            &dir.path().join("data"),
            &config_file,
            args,
            &env,
        ))
    }

    /// Drops the arguments `name` and its value (e.g. `--join` after the first start).
    pub fn forget_arg(&mut self, name: &str) {
        if let Some(at) = self.args.iter().position(|a| a == name) {
            self.args.drain(at..(at + 2).min(self.args.len()));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the node to exit by itself; panics unless it exits 0 within `deadline`.
    pub fn wait_for_exit(&mut self, deadline: Duration) {
        let child = self.child.take().expect("the node is running");
        self.expect_clean_exit(child, deadline, "exit by itself");
    }

    fn expect_clean_exit(&self, mut child: Child, deadline: Duration, what: &str) {
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "node exited with {status}; logs:\n{}",
                    self.logs()
                );
                return;
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                panic!("node did not {what}; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the node dies at once, as in a crash (its data dir stays).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; panics unless the node exits 0 within the deadline.
    pub fn stop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        signal(child.id(), "-TERM");
        self.expect_clean_exit(child, Duration::from_secs(40), "stop after SIGTERM");
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    /// `GET path` without credentials.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"))
    }

    /// A request as `user` (bearer token with `sub = user`).
    pub fn as_user(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {}", unsigned_token(user)))
    }

    /// `GET path` as `user`, answered with JSON.
    pub async fn get_json(&self, path: &str, user: &str) -> Value {
        self.as_user(reqwest::Method::GET, path, user)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// The metrics, by series (`name{labels}`), one value per series. With an owner
    /// behind this node, each series is the sum over both: requests are
    /// counted where they arrive, user state where it lives.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let mut all = self.own_metrics().await;
        if let Some(owner) = &self.owner {
            for (series, value) in Box::pin(owner.metrics()).await {
                *all.entry(series).or_default() += value;
            }
        }
        all
    }

    async fn own_metrics(&self) -> HashMap<String, f64> {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics().await.get(series).copied().unwrap_or(0.0)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "-TERM");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

/// A JWT that is only decoded (no key configured): `{"alg":"none"}` header, `sub` claim.
pub fn unsigned_token(user: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::json!({ "sub": user }).to_string());
    format!("{header}.{claims}.sig")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request with a raw body (content type JSON).
pub fn raw(
    node: &TestNode,
    method: reqwest::Method,
    path: &str,
    body: &'static str,
) -> reqwest::RequestBuilder {
    node.client
        .request(method, node.url(path))
        .header("content-type", "application/json")
        .body(body)
}

/// Moves a manual clock (`dev.manual_clock = true`) forward.
pub async fn advance_clock(node: &TestNode, millis: u64) {
    if let Some(owner) = &node.owner {
        Box::pin(advance_clock(owner, millis)).await;
    }
    let response = node
        .client
        .post(node.url("/dev/clock/advance"))
        .json(&serde_json::json!({ "millis": millis }))
        .send()
        .await
        .expect("POST /dev/clock/advance");
    assert_eq!(response.status(), 200, "advancing the clock");
}

/// The sessions of a user's live slots, through `/v1/streams`.
pub async fn sessions(node: &TestNode, user: &str) -> Vec<String> {
    node.get_json("/v1/streams", user)
        .await
        .as_array()
        .expect("an array")
        .iter()
        .map(|slot| slot["sessionId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A fresh asset id.
pub fn asset() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh user id, so tests sharing an emulator never see each other's data.
pub fn user() -> String {
    format!("user-{}", uuid::Uuid::new_v4())
}
