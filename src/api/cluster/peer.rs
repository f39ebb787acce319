//! What nodes ask each other about users and shards: forwarded commands, backups of
//! their shards, lease renewals (of the leader) and shard handoffs.

use std::time::Instant;

use actix_web::web;

use super::{Answer, serve};
use crate::api::AppState;
use crate::api::middleware;
use crate::cluster::ExportRequest;
use crate::cluster::controller::HandoffExport;
use crate::cluster::lease::LeaseRenewal;
use crate::cluster::lease::{self, LeaseRequest};
use crate::users::{
    Backup, BackupBatch, Forward, ForwardedCommand, ForwardedReply, HandoffImport, ShardImport,
};

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

/// Old owner: hands the shards to their new owner (see `users::shards`).
async fn export(state: web::Data<AppState>, request: ExportRequest) -> Answer<HandoffExport> {
    Ok(state.users.export_shards(request).await?)
}

/// New owner: holds the users handed over (see `users::shards`).
async fn import(state: web::Data<AppState>, imports: Vec<ShardImport>) -> Answer<HandoffImport> {
    Ok(state.users.import_shards(imports).await?)
}
