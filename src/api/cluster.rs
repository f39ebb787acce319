//! The cluster listener: Raft RPCs, forwarded user commands, shard handoffs and the admin
//! API. Never on the player listener. Every route needs `Authorization: Bearer <secret>`.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::Dialect;
use super::{middleware, params};
use crate::actors::UserHandoff;
use crate::cluster::lease::{self, LeaseRequest};
use crate::cluster::rpc::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use crate::cluster::{
    Cluster, ClusterError, ExportDone, ExportRequest, JoinRequest, NodeId, Request, ShardId,
};
use crate::users::{BackupBatch, ForwardedCommand, ForwardedReply};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/cluster")
            .wrap(from_fn(require_secret))
            .app_data(web::JsonConfig::default().error_handler(|e, _| {
                let message = e.to_string();
                actix_web::error::InternalError::from_response(
                    e,
                    HttpResponse::BadRequest().json(serde_json::json!({ "error": message })),
                )
                .into()
            }))
            .route("/raft/append", web::post().to(append))
            .route("/raft/vote", web::post().to(vote))
            .route("/raft/snapshot", web::post().to(snapshot))
            .route("/lease", web::post().to(lease))
            .route("/backup", web::post().to(backup))
            .route("/forward", web::post().to(forward))
            .route("/handoff/export", web::post().to(export))
            .route("/handoff/import", web::post().to(import))
            .route("/admin/status", web::get().to(status))
            .route("/admin/route/{user}", web::get().to(route))
            .route("/admin/join", web::post().to(join))
            .route("/admin/leave", web::post().to(leave))
            .route("/admin/drain", web::post().to(drain))
            .route("/admin/write", web::post().to(write)),
    );
}

/// Every cluster route is for other nodes and operators holding the secret. With no
/// secret configured (allowed only on a loopback cluster listener) none is asked.
async fn require_secret(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("app state is registered");
    let secret = state.cluster.settings().secret.as_bytes();
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if !secret.is_empty() && !constant_time_eq(presented, secret) {
        let response = HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Bearer"))
            .json(serde_json::json!({ "error": "the cluster secret is missing or wrong" }));
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Compares without stopping at the first difference, so timing tells nothing of how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn cluster_error(e: ClusterError) -> HttpResponse {
    let status = match e {
        ClusterError::Removed(_) | ClusterError::Refused(_) => StatusCode::GONE,
        ClusterError::NoLeader(_) | ClusterError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    HttpResponse::build(status).json(e)
}

async fn append(state: web::Data<AppState>, rpc: web::Json<AppendEntriesRequest>) -> HttpResponse {
    HttpResponse::Ok().json(state.cluster.raft().append_entries(rpc.into_inner()).await)
}

async fn vote(state: web::Data<AppState>, rpc: web::Json<VoteRequest>) -> HttpResponse {
    HttpResponse::Ok().json(state.cluster.raft().vote(rpc.into_inner()).await)
}

async fn snapshot(
    state: web::Data<AppState>,
    rpc: web::Json<InstallSnapshotRequest>,
) -> HttpResponse {
    HttpResponse::Ok().json(
        state
            .cluster
            .raft()
            .install_snapshot(rpc.into_inner())
            .await,
    )
}

/// A member asks this node, the leader, to renew its ownership lease.
async fn lease(state: web::Data<AppState>, request: web::Json<LeaseRequest>) -> HttpResponse {
    HttpResponse::Ok().json(lease::on_request(&state.cluster, &request))
}

/// The owner of shards this node backs up sends what changed.
async fn backup(state: web::Data<AppState>, batch: web::Json<BackupBatch>) -> HttpResponse {
    let backups = state.users.backups();
    let answer = backups.receive(batch.into_inner());
    state
        .metrics
        .cluster
        .backup_users
        .set(backups.users() as i64);
    HttpResponse::Ok().json(answer)
}

/// Runs a batch of forwarded commands at once; answers in the same order.
async fn forward(
    state: web::Data<AppState>,
    commands: web::Json<Vec<ForwardedCommand>>,
) -> HttpResponse {
    let replies = futures_util::future::join_all(
        commands
            .into_inner()
            .into_iter()
            .map(|command| execute_forwarded(&state, command)),
    )
    .await;
    HttpResponse::Ok().json(replies)
}

/// One forwarded command, with its access line: a batch carries the commands of many
/// requests, so each is logged with its own request's correlation id.
async fn execute_forwarded(state: &AppState, mut forwarded: ForwardedCommand) -> ForwardedReply {
    let started = std::time::Instant::now();
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

/// The users of one shard, handed to its new owner.
#[derive(Serialize, Deserialize)]
struct ShardImport {
    shard: ShardId,
    /// The epoch the shard had at its old owner.
    epoch: u64,
    users: Vec<UserHandoff>,
}

/// Old owner: stop serving the shards, store their users' progress, and send their live
/// slots to the new owner. On failure the leader gives the moves up, and the shards are
/// served here again when this node sees that (`follow_shard_table`), not before: this
/// export may have been given up and begun again meanwhile (the store was slow, the
/// leader stopped waiting), and only the latest may decide.
async fn export(state: web::Data<AppState>, request: web::Json<ExportRequest>) -> HttpResponse {
    let ExportRequest { to, shards } = request.into_inner();
    let users = state.users.registry();
    let mut imports = Vec::with_capacity(shards.len());
    for (shard, epoch) in &shards {
        let Some(exported) = users.export(*shard).await else {
            tracing::info!(
                shard = shard.0,
                "handoff: a later export of this shard began; this one stops"
            );
            return HttpResponse::Conflict().json(serde_json::json!({
                "error": format!("superseded by a later export of shard {}", shard.0)
            }));
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
            .post::<_, serde_json::Value>(
                &addr,
                "/cluster/handoff/import",
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
            HttpResponse::Ok().json(ExportDone { users: moved })
        }
        Err(why) => {
            tracing::warn!(to, error = %why, "handoff: the new owner did not take the shards");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": why }))
        }
    }
}

/// New owner: hold the slots handed over until the shard is ours. Waits for this node's
/// table to show the move, so an older table cannot make it drop what it just received.
/// Only while the move is on: an import that arrives after it finished (or was given up)
/// is from an export given up earlier, older than what this node holds.
async fn import(state: web::Data<AppState>, imports: web::Json<Vec<ShardImport>>) -> HttpResponse {
    let router = state.users.router();
    let me = router.local();
    let wait = state.cluster.settings().handoff_wait;
    for import in imports.into_inner() {
        let started = std::time::Instant::now();
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
                return HttpResponse::ServiceUnavailable().json(serde_json::json!({
                    "error": format!("shard {} is not moving to node {me}", import.shard.0)
                }));
            }
        }
        state.users.registry().install(import.shard, import.users);
    }
    HttpResponse::Ok().json(serde_json::json!({ "status": "imported" }))
}

/// Where a user's commands go, as this node's table says: for operators tracing one
/// user, and for tests that need a user of a given node.
async fn route(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let user = match params::path_id::<crate::domain::UserId>(&req, "user") {
        Ok(user) => user,
        Err(e) => {
            let error = e.message(Dialect::Problem);
            return HttpResponse::BadRequest().json(serde_json::json!({ "error": error }));
        }
    };
    let router = state.users.router();
    let shard = router.shard_of(&user);
    let table = router.table();
    let owner = table.owner(shard);
    HttpResponse::Ok().json(serde_json::json!({
        "user": user.as_str(),
        "shard": shard.0,
        "owner": owner.map(|o| o.node.0),
        "epoch": owner.map(|o| o.epoch),
        "backup": table.backup_of(shard).map(|b| b.0),
    }))
}

async fn status(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.cluster.status())
}

/// Sends a management request on to the leader unless this node is the leader; `None`
/// means: handle it here.
async fn on_leader<B: Serialize>(cluster: &Cluster, path: &str, body: &B) -> Option<HttpResponse> {
    let leader = cluster.leader();
    if leader == Some(cluster.id()) {
        return None;
    }
    let Some(addr) = leader.and_then(|l| cluster.cluster_addr_of(l)) else {
        return Some(cluster_error(ClusterError::NoLeader(Duration::ZERO)));
    };
    let relayed = cluster
        .peers()
        .post::<_, serde_json::Value>(&addr, path, body, Duration::from_secs(180))
        .await;
    Some(match relayed {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(e) => cluster_error(e.into()),
    })
}

async fn join(state: web::Data<AppState>, request: web::Json<JoinRequest>) -> HttpResponse {
    let request = request.into_inner();
    if let Some(relayed) = on_leader(&state.cluster, "/cluster/admin/join", &request).await {
        return relayed;
    }
    match state.cluster.add_node(request).await {
        Ok(joined) => HttpResponse::Ok().json(joined),
        Err(e) => cluster_error(e),
    }
}

#[derive(Serialize, Deserialize)]
struct NodeRequest {
    node_id: u64,
}

async fn leave(state: web::Data<AppState>, request: web::Json<NodeRequest>) -> HttpResponse {
    let request = request.into_inner();
    if let Some(relayed) = on_leader(&state.cluster, "/cluster/admin/leave", &request).await {
        return relayed;
    }
    match state
        .cluster
        .leave(NodeId(request.node_id), Duration::from_secs(170))
        .await
    {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "left": request.node_id })),
        Err(e) => cluster_error(e),
    }
}

async fn drain(state: web::Data<AppState>, request: web::Json<NodeRequest>) -> HttpResponse {
    match state.cluster.drain(NodeId(request.node_id)).await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "draining": request.node_id })),
        Err(e) => cluster_error(e),
    }
}

/// Commits a metadata change another node asked for; only the leader takes it.
async fn write(state: web::Data<AppState>, request: web::Json<Request>) -> HttpResponse {
    if !state.cluster.is_leader() {
        return cluster_error(ClusterError::Failed("not the leader".into()));
    }
    match state.cluster.write_indexed(request.into_inner()).await {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(e) => cluster_error(e),
    }
}
