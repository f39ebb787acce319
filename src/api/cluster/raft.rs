//! Raft's RPCs from other nodes, handed to this node's Raft.

use actix_web::web;

use super::{Answer, serve};
use crate::api::AppState;
use crate::cluster::endpoint::{RaftAppend, RaftSnapshot, RaftVote};
use crate::cluster::rpc::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    serve::<RaftAppend, _, _>(cfg, append);
    serve::<RaftVote, _, _>(cfg, vote);
    serve::<RaftSnapshot, _, _>(cfg, snapshot);
}

async fn append(state: web::Data<AppState>, rpc: AppendEntriesRequest) -> Answer<RaftAppend> {
    Ok(state.cluster.raft().append_entries(rpc).await)
}

async fn vote(state: web::Data<AppState>, rpc: VoteRequest) -> Answer<RaftVote> {
    Ok(state.cluster.raft().vote(rpc).await)
}

async fn snapshot(state: web::Data<AppState>, rpc: InstallSnapshotRequest) -> Answer<RaftSnapshot> {
    Ok(state.cluster.raft().install_snapshot(rpc).await)
}
