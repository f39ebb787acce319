//! `playstate cluster …`: the operator's commands, sent to any member's cluster listener
//! with the secret from `PLAYSTATE_CLUSTER__SECRET`.

use std::process::ExitCode;
use std::time::Duration;

use crate::cluster::management::{AdminLeave, AdminStatus, NodeRequest};
use crate::cluster::{Peers, StatusReport};

pub enum AdminCommand {
    Status {
        cluster_addr: String,
        json: bool,
    },
    /// Removes a node: a live one hands its shards over first; one that is `gone` (never
    /// returns) loses them to failover. The server does the same for both; only what the
    /// operator is told differs.
    Leave {
        cluster_addr: String,
        node_id: u64,
        gone: bool,
    },
}

pub fn run(command: AdminCommand) -> ExitCode {
    let secret = std::env::var("PLAYSTATE_CLUSTER__SECRET").unwrap_or_default();
    let peers = Peers::new(&secret);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async move {
        match command {
            AdminCommand::Status { cluster_addr, json } => {
                match peers
                    .call::<AdminStatus>(&cluster_addr, &(), Duration::from_secs(10))
                    .await
                {
                    Ok(report) if json => {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).expect("a report serializes")
                        );
                        ExitCode::SUCCESS
                    }
                    Ok(report) => {
                        print!("{}", render(&report));
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            AdminCommand::Leave {
                cluster_addr,
                node_id,
                gone,
            } => {
                if gone {
                    eprintln!(
                        "node {node_id}: its shards go to their backups once the leader has \
                         not heard from it for cluster.failover_after, then it is removed…"
                    );
                } else {
                    eprintln!("node {node_id}: draining its shards, then removing it…");
                }
                let request = NodeRequest { node_id };
                match peers
                    .call::<AdminLeave>(&cluster_addr, &request, Duration::from_secs(200))
                    .await
                {
                    Ok(_) => {
                        println!("node {node_id} has left the cluster");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
        }
    })
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("playstate cluster: {e}");
    ExitCode::FAILURE
}

/// The status as a table for a terminal.
pub fn render(report: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let leader = report
        .leader
        .map_or_else(|| "none".to_owned(), |l| l.to_string());
    let _ = writeln!(
        out,
        "leader {leader}, term {}, last applied {} (as node {} sees it)\n",
        report.term, report.last_applied, report.node_id
    );
    let _ = writeln!(
        out,
        "{:<6} {:<8} {:<9} {:<7} {:<22} {:<22}",
        "node", "role", "state", "shards", "player address", "cluster address"
    );
    for m in &report.members {
        let shards = report.shards.get(&m.id.to_string()).copied().unwrap_or(0);
        let marker = if Some(m.id) == report.leader { "*" } else { "" };
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<9} {:<7} {:<22} {:<22}",
            format!("{}{marker}", m.id),
            m.role,
            m.state.as_str(),
            shards,
            m.player_addr,
            m.cluster_addr
        );
    }
    if !report.unreachable.is_empty() {
        let _ = writeln!(
            out,
            "\nunreachable (no lease renewal for cluster.failover_after): {:?}",
            report.unreachable
        );
    }
    if !report.lease_valid {
        let _ = writeln!(
            out,
            "\nnode {} holds no ownership lease: it serves none of its shards",
            report.node_id
        );
    }
    // Workers that are not running as they should (restarting after a failure).
    for w in report
        .workers
        .iter()
        .filter(|w| w.state == crate::worker::WorkerState::Restarting)
    {
        let _ = writeln!(
            out,
            "\nworker {} is restarting (restarted {} times; last error: {})",
            w.name,
            w.restarts,
            w.last_error.as_deref().unwrap_or("none")
        );
    }
    if report.handoffs.is_empty() {
        let _ = writeln!(out, "\nno handoffs in progress");
    } else {
        let _ = writeln!(out, "\n{} shards moving:", report.handoffs.len());
        for h in report.handoffs.iter().take(20) {
            let _ = writeln!(out, "  shard {} : {} -> {}", h.shard, h.from, h.to);
        }
    }
    out
}
