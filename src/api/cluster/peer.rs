//! What nodes ask each other about users and shards: forwarded commands, backups of
//! their shards, lease renewals (of the leader) and shard handoffs.

use std::time::{Duration, Instant};

use actix_web::web;
use serde::{Deserialize, Serialize};

use super::{Answer, serve};
use crate::actors::UserHandoff;
use crate::api::AppState;
use crate::api::error::ClusterRouteError;
use crate::api::middleware;
use crate::cluster::controller::HandoffExport;
use crate::cluster::endpoint::endpoint;
use crate::cluster::lease::LeaseRenewal;
use crate::cluster::lease::{self, LeaseRequest};
use crate::cluster::{ExportDone, ExportRequest, NodeId, ShardId};
use crate::users::{Backup, BackupBatch, Forward, ForwardedCommand, ForwardedReply};

endpoint!(
    /// The old owner of shards hands their users to the new owner.
    HandoffImport, Post "/cluster/handoff/import", Vec<ShardImport> => Imported
);

/// The users of one shard, handed to its new owner.
#[derive(Serialize, Deserialize)]
pub struct ShardImport {
    shard: ShardId,
    /// The epoch the shard had at its old owner.
    epoch: u64,
    users: Vec<UserHandoff>,
}

/// The new owner holds the users handed over.
#[derive(Serialize, Deserialize)]
pub struct Imported {
    status: ImportStatus,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ImportStatus {
    Imported,
}

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    serve::<LeaseRenewal, _, _>(cfg, renew_lease);
    serve::<Backup, _, _>(cfg, backup);
    serve::<Forward, _, _>(cfg, forward);
    serve::<HandoffExport, _, _>(cfg, export);
    serve::<HandoffImport, _, _>(cfg, import);
}

/// A member asks this node, the leader, to renew its ownership lease.
async fn renew_lease(state: web::Data<AppState>, request: LeaseRequest) -> Answer<LeaseRenewal> {
    Ok(lease::on_request(&state.cluster, &request))
}

/// The owner of shards this node backs up sends what changed.
async fn backup(state: web::Data<AppState>, batch: BackupBatch) -> Answer<Backup> {
    let backups = state.users.backups();
    let answer = backups.receive(batch);
    state
        .metrics
        .cluster
        .backup_users
        .set(backups.users() as i64);
    Ok(answer)
}

/// Runs a batch of forwarded commands at once; answers in the same order.
async fn forward(state: web::Data<AppState>, commands: Vec<ForwardedCommand>) -> Answer<Forward> {
    let replies = futures_util::future::join_all(
        commands
            .into_iter()
            .map(|command| execute_forwarded(&state, command)),
    )
    .await;
    Ok(replies)
}

/// One forwarded command, with its access line: a batch carries the commands of many
/// requests, so each is logged with its own request's correlation id.
async fn execute_forwarded(state: &AppState, mut forwarded: ForwardedCommand) -> ForwardedReply {
    let started = Instant::now();
    let command = forwarded.command.name();
    let user = forwarded.user.clone();
    let correlation_id = forwarded.correlation_id.take();
    let reply = state.users.execute_forwarded(forwarded).await;
    let outcome = match &reply {
        ForwardedReply::Done(_) => "ok",
        ForwardedReply::Moved => "moved",
        ForwardedReply::Unavailable(_) => "unavailable",
    };
    middleware::forwarded_access_log(
        state.request_log,
        command,
        &user,
        outcome,
        started.elapsed().as_secs_f64() * 1000.0,
        correlation_id.as_deref(),
    );
    reply
}

/// Old owner: stop serving the shards, store their users' progress, and send their live
/// slots to the new owner. On failure the leader gives the moves up, and the shards are
/// served here again when this node sees that (`follow_shard_table`), not before: this
/// export may have been given up and begun again meanwhile (the store was slow, the
/// leader stopped waiting), and only the latest may decide.
async fn export(state: web::Data<AppState>, request: ExportRequest) -> Answer<HandoffExport> {
    let ExportRequest { to, shards } = request;
    let users = state.users.registry();
    let mut imports = Vec::with_capacity(shards.len());
    for (shard, epoch) in &shards {
        let Some(exported) = users.export(*shard).await else {
            tracing::info!(
                shard = shard.0,
                "handoff: a later export of this shard began; this one stops"
            );
            return Err(ClusterRouteError::Superseded(format!(
                "superseded by a later export of shard {}",
                shard.0
            )));
        };
        imports.push(ShardImport {
            shard: *shard,
            epoch: *epoch,
            users: exported,
        });
    }
    let moved: usize = imports.iter().map(|i| i.users.len()).sum();
    let sent = match state.cluster.cluster_addr_of(NodeId(to)) {
        Some(addr) => state
            .cluster
            .peers()
            .call::<HandoffImport>(
                &addr,
                &imports,
                state.cluster.settings().handoff_wait + Duration::from_secs(5),
            )
            .await
            .map_err(|e| e.to_string()),
        None => Err(format!("node {to} has no address")),
    };
    match sent {
        Ok(_) => {
            state
                .metrics
                .cluster
                .shards_moved
                .inc_by(shards.len() as u64);
            Ok(ExportDone { users: moved })
        }
        Err(why) => {
            tracing::warn!(to, error = %why, "handoff: the new owner did not take the shards");
            Err(ClusterRouteError::NotNow(why))
        }
    }
}

/// New owner: hold the slots handed over until the shard is ours. Waits for this node's
/// table to show the move, so an older table cannot make it drop what it just received.
/// Only while the move is on: an import that arrives after it finished (or was given up)
/// is from an export given up earlier, older than what this node holds.
async fn import(state: web::Data<AppState>, imports: Vec<ShardImport>) -> Answer<HandoffImport> {
    let router = state.users.router();
    let me = router.local();
    let wait = state.cluster.settings().handoff_wait;
    for import in imports {
        let started = Instant::now();
        loop {
            let mut changes = router.subscribe();
            let table = router.table();
            let moving_here = table.moving_to(import.shard) == Some(me)
                && table
                    .owner(import.shard)
                    .is_some_and(|o| o.epoch == import.epoch);
            if moving_here {
                break;
            }
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() || !router.changed_within(&mut changes, left).await {
                return Err(ClusterRouteError::NotNow(format!(
                    "shard {} is not moving to node {me}",
                    import.shard.0
                )));
            }
        }
        state.users.registry().install(import.shard, import.users);
    }
    Ok(Imported {
        status: ImportStatus::Imported,
    })
}
