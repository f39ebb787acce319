//! A node whose redb files were damaged, emptied or deleted behind its back refuses to
//! start, saying which file and what to do; it neither panics nor starts empty.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::helpers::{TestNode, asset, user};

/// Long enough for a node to fail its start; one still running after it has started.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How a file is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The middle half of the file overwritten with other bytes (a smaller spot may fall
    /// on free pages, which is no damage).
    Middle,
    /// Truncated to zero length.
    Emptied,
    Deleted,
}

impl Damage {
    fn apply(self, path: &Path) {
        match self {
            Damage::Middle => {
                let mut bytes = std::fs::read(path).unwrap();
                let (from, to) = (bytes.len() / 4, bytes.len() * 3 / 4);
                for b in &mut bytes[from..to] {
                    *b ^= 0xA5;
                }
                std::fs::write(path, bytes).unwrap();
            }
            Damage::Emptied => std::fs::File::create(path).map(drop).unwrap(),
            Damage::Deleted => std::fs::remove_file(path).unwrap(),
        }
    }
}

/// A stopped node whose data dir holds progress of `readers` (stored, not just dirty).
async fn node_with_data() -> (TestNode, Vec<String>, String) {
    let mut node = TestNode::spawn_with("", &[], &[]).await;
    let asset = asset();
    let readers: Vec<String> = (0..200).map(|_| user()).collect();
    for reader in &readers {
        let put = node
            .as_user(Method::PUT, &format!("/v1/progress/{asset}"), reader)
            .json(&json!({ "progress": 61 }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    // A graceful stop stores every dirty entry.
    node.stop();
    (node, readers, asset)
}

/// Starts the binary on `node`'s data dir: its exit status (`None`: still running at the
/// deadline, killed) and its output.
fn start_on(node: &TestNode) -> (Option<std::process::ExitStatus>, String) {
    let dir = node.data_dir.parent().unwrap();
    let log = dir.join("damaged-start.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_playstate"))
        .args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--config")
        .arg(dir.join("node.toml"))
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > START_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Each damage to `file` stops the node with a message naming the file and the remedy;
/// with the file restored, the node starts again with everything it held.
async fn each_damage_stops_the_node(file: &str) {
    let (node, readers, asset) = node_with_data().await;
    let path = node.data_dir.join(file);
    let sound = std::fs::read(&path).unwrap();
    for damage in [Damage::Middle, Damage::Emptied, Damage::Deleted] {
        damage.apply(&path);
        let (status, output) = start_on(&node);
        let status = status.unwrap_or_else(|| {
            panic!("{damage:?} {file}: the node started anyway; output:\n{output}")
        });
        assert!(!status.success(), "{damage:?} {file}: {status}\n{output}");
        assert_ne!(
            status.code(),
            Some(101),
            "{damage:?} {file}: a panic\n{output}"
        );
        assert!(
            !output.contains("panicked"),
            "{damage:?} {file}: a panic\n{output}"
        );
        let named = path.display().to_string();
        assert!(
            output.contains(&named) && output.contains("Restore it from a backup"),
            "{damage:?} {file}: the message must name the file and the remedy\n{output}"
        );
        std::fs::write(&path, &sound).unwrap();
    }
    let node = node.start_again().await;
    for reader in readers.iter().step_by(50) {
        assert_eq!(
            node.get_json(&format!("/v1/progress/{asset}"), reader)
                .await,
            json!({ "asset": asset, "progress": 61 }),
        );
    }
}

#[tokio::test]
async fn a_damaged_emptied_or_deleted_user_store_stops_the_node() {
    each_damage_stops_the_node("playstate.redb").await;
}

#[tokio::test]
async fn a_damaged_emptied_or_deleted_raft_log_stops_the_node() {
    each_damage_stops_the_node("raft.redb").await;
}
