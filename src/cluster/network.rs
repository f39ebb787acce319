//! Node-to-node calls over the cluster listener: Raft RPCs, forwarded user commands,
//! handoff transfers and admin requests (each an `endpoint::Endpoint`), all JSON over
//! pooled keep-alive HTTP/1.1 with the cluster secret as a bearer token.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::endpoint::{Endpoint, Method, RaftAppend, RaftSnapshot, RaftVote};
use super::ids::NodeId;
use super::peer_health::PeerHealth;
use super::router::Router;
use super::types::{NodeAddr, TypeConfig};
use crate::error_chain::DisplayChain;

/// Why a call to another node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// Nothing answered (refused, reset, timed out): the node may be down.
    #[error("node at {addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// It answered with an error status.
    #[error("node at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    /// It answered something this version cannot read.
    #[error("node at {addr} sent an unreadable answer: {reason}")]
    Decode { addr: String, reason: String },
}

/// A client for other nodes' cluster listeners, shared by everything on a node.
#[derive(Clone)]
pub struct Peers {
    client: reqwest::Client,
    bearer: std::sync::Arc<str>,
}

impl Peers {
    pub fn new(secret: &str) -> Peers {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("a client with no TLS settings builds");
        Peers {
            client,
            bearer: format!("Bearer {secret}").into(),
        }
    }

    /// Asks endpoint `E` of the node whose cluster listener is `addr`.
    pub async fn call<E: Endpoint>(
        &self,
        addr: &str,
        request: &E::Request,
        timeout: Duration,
    ) -> Result<E::Reply, PeerError> {
        let body = match E::METHOD {
            Method::Get => None,
            Method::Post => Some(serde_json::to_vec(request).map_err(|e| PeerError::Decode {
                addr: addr.to_owned(),
                reason: format!("cannot encode the request: {e}"),
            })?),
        };
        self.send::<E>(addr, body, timeout).await
    }

    /// As `call`, with the request already JSON (a batch put together from items each
    /// encoded on its own).
    pub async fn call_encoded<E: Endpoint>(
        &self,
        addr: &str,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<E::Reply, PeerError> {
        self.send::<E>(addr, Some(request), timeout).await
    }

    async fn send<E: Endpoint>(
        &self,
        addr: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<E::Reply, PeerError> {
        let url = format!("http://{addr}{}", E::PATH);
        let request = match E::METHOD {
            Method::Get => self.client.get(url),
            Method::Post => self.client.post(url),
        }
        .header(reqwest::header::AUTHORIZATION, &*self.bearer)
        .timeout(timeout);
        let request = match body {
            Some(body) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
            None => request,
        };
        let response = request.send().await.map_err(|e| PeerError::Unreachable {
            addr: addr.to_owned(),
            // reqwest's top-level message hides the cause ("error sending request").
            reason: DisplayChain(&e).to_string(),
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| PeerError::Unreachable {
            addr: addr.to_owned(),
            reason: DisplayChain(&e).to_string(),
        })?;
        if !status.is_success() {
            return Err(PeerError::Status {
                addr: addr.to_owned(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| PeerError::Decode {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Makes Raft's clients for other nodes.
pub struct Network {
    pub peers: Peers,
    pub router: Router,
    pub health: Arc<PeerHealth>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NodeClient;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> NodeClient {
        NodeClient {
            target,
            fallback_addr: node.cluster_addr.clone(),
            peers: self.peers.clone(),
            router: self.router.clone(),
            health: self.health.clone(),
        }
    }
}

/// Raft's client for one other node.
pub struct NodeClient {
    target: u64,
    /// The address in the Raft membership; the member list's wins when it has one (a
    /// restarted node may listen elsewhere now).
    fallback_addr: String,
    peers: Peers,
    router: Router,
    health: Arc<PeerHealth>,
}

impl NodeClient {
    async fn call<E, Resp, Err>(
        &self,
        request: &E::Request,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, NodeAddr, RaftError<u64, Err>>>
    where
        E: Endpoint<Reply = Result<Resp, RaftError<u64, Err>>>,
        Err: std::error::Error,
    {
        let addr = self
            .router
            .table()
            .cluster_addr(NodeId(self.target))
            .map(|a| a.to_string())
            .unwrap_or_else(|| self.fallback_addr.clone());
        let answer = self
            .peers
            .call::<E>(&addr, request, option.hard_ttl())
            .await;
        match &answer {
            Err(e @ PeerError::Unreachable { .. }) => self.health.unreachable(self.target, e),
            _ => self.health.answered(self.target),
        }
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(e @ PeerError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for NodeClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64>>> {
        self.call::<RaftAppend, _, _>(&rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, NodeAddr, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call::<RaftSnapshot, _, _>(&rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, NodeAddr, RaftError<u64>>> {
        self.call::<RaftVote, _, _>(&rpc, &option).await
    }
}
