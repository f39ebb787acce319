//! The admin API: what operators (`playstate cluster …`) and joining nodes ask of any
//! member, which passes management requests on to the leader.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};

use super::{Answer, path_in_scope, respond, serve, serve_get};
use crate::api::AppState;
use crate::api::error::{ClusterRouteError, Dialect};
use crate::api::params;
use crate::cluster::endpoint::Endpoint;
use crate::cluster::management::{
    AdminDrain, AdminJoin, AdminLeave, AdminRoute, AdminStatus, AdminWrite, Draining, Left,
    NodeRequest,
};
use crate::cluster::{Cluster, ClusterError, JoinRequest, NodeId, Request};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    serve_get::<AdminStatus, _, _>(cfg, status);
    cfg.route(path_in_scope::<AdminRoute>(), web::get().to(route));
    serve::<AdminJoin, _, _>(cfg, join);
    serve::<AdminLeave, _, _>(cfg, leave);
    serve::<AdminDrain, _, _>(cfg, drain);
    serve::<AdminWrite, _, _>(cfg, write);
}

/// Where a user's commands go, as this node's table says: for operators tracing one
/// user, and for tests that need a user of a given node.
async fn route(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let user = match params::path_id::<crate::domain::UserId>(&req, "user") {
        Ok(user) => user,
        Err(e) => {
            return ClusterRouteError::BadRequest(e.message(Dialect::Problem)).render();
        }
    };
    respond::<AdminRoute>(Ok(state.users.route_report(user)))
}

async fn status(state: web::Data<AppState>) -> Answer<AdminStatus> {
    let mut report = state.cluster.status();
    report.workers = state.workers.list();
    Ok(report)
}

/// Sends a management request on to the leader unless this node is the leader; `None`
/// means: handle it here.
async fn on_leader<E: Endpoint>(cluster: &Cluster, request: &E::Request) -> Option<Answer<E>> {
    let leader = cluster.leader();
    if leader == Some(cluster.id()) {
        return None;
    }
    let Some(addr) = leader.and_then(|l| cluster.cluster_addr_of(l)) else {
        return Some(Err(ClusterError::NoLeader(Duration::ZERO).into()));
    };
    let relayed = cluster
        .peers()
        .call::<E>(&addr, request, Duration::from_secs(180))
        .await;
    Some(relayed.map_err(|e| ClusterError::from(e).into()))
}

async fn join(state: web::Data<AppState>, request: JoinRequest) -> Answer<AdminJoin> {
    if let Some(relayed) = on_leader::<AdminJoin>(&state.cluster, &request).await {
        return relayed;
    }
    Ok(state.cluster.add_node(request).await?)
}

async fn leave(state: web::Data<AppState>, request: NodeRequest) -> Answer<AdminLeave> {
    if let Some(relayed) = on_leader::<AdminLeave>(&state.cluster, &request).await {
        return relayed;
    }
    state
        .cluster
        .leave(NodeId(request.node_id), Duration::from_secs(170))
        .await?;
    Ok(Left {
        left: request.node_id,
    })
}

async fn drain(state: web::Data<AppState>, request: NodeRequest) -> Answer<AdminDrain> {
    state.cluster.drain(NodeId(request.node_id)).await?;
    Ok(Draining {
        draining: request.node_id,
    })
}

/// Commits a metadata change another node asked for; only the leader takes it.
async fn write(state: web::Data<AppState>, request: Request) -> Answer<AdminWrite> {
    if !state.cluster.is_leader() {
        return Err(ClusterError::Failed("not the leader".into()).into());
    }
    Ok(state.cluster.write_indexed(request).await?)
}
