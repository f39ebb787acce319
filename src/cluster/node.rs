//! This node's part in the cluster: opening Raft on its data dir, forming or joining a
//! cluster, committing metadata changes through the leader, and the management
//! operations (join, leave, drain, status) the admin API and the CLI call.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use super::ids::{MemberState, NodeId};
use super::log_store::{LogStore, open_database};
use super::management::{
    AdminJoin, AdminStatus, AdminWrite, JoinRequest, Joined, MemberReport, MoveReport, StatusReport,
};
use super::network::{Network, PeerError, Peers};
use super::ownership::{Grants, OwnershipLease};
use super::router::Router;
use super::state::ClusterState;
use super::state_machine::{Replica, StateMachine};
use super::types::{NodeAddr, OpenError, Raft, Refusal, Request, Response};
use crate::telemetry::Metrics;

#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub node_id: NodeId,
    pub shards: u32,
    pub voters: usize,
    pub handoff_wait: Duration,
    pub handoff_batch: usize,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_every: u64,
    pub ownership_lease: Duration,
    pub failover_after: Duration,
    pub secret: String,
    /// The user store every member must share (see `Config::shared_store`); `None` when
    /// this node's store is its own, so that no other node may join.
    pub shared_store: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ClusterError {
    /// This node id was removed; it must never serve again.
    #[error(
        "node {0} was removed from the cluster; node ids are never reused: start it with a \
         new --node-id and an empty data dir"
    )]
    Removed(u64),
    #[error("no leader answered within {0:?}; the cluster may have lost its majority")]
    NoLeader(Duration),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl From<Refusal> for ClusterError {
    fn from(refusal: Refusal) -> ClusterError {
        match refusal {
            Refusal::Removed { node } => ClusterError::Removed(node),
            other => ClusterError::Refused(other.to_string()),
        }
    }
}

impl From<PeerError> for ClusterError {
    fn from(e: PeerError) -> ClusterError {
        match e {
            // A peer's own refusal (409/410) carries its reason as the body.
            PeerError::Status {
                status: 410, body, ..
            } => serde_json::from_str(&body).unwrap_or(ClusterError::Refused(body)),
            other => ClusterError::Failed(other.to_string()),
        }
    }
}

/// Why this node cannot serve player traffic yet (see `Cluster::readiness`).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("not yet a member of a cluster")]
    NotJoined,
    #[error("not a member of the cluster")]
    NotMember,
    #[error("no known leader")]
    NoLeader,
    #[error("no ownership lease: the leader has not renewed it (cut off?)")]
    NoLease,
    #[error("catching up: applied {applied} of {ready_at}")]
    CatchingUp { applied: u64, ready_at: u64 },
}

#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    addr: NodeAddr,
    raft: Raft,
    replica: Replica,
    peers: Peers,
    settings: ClusterSettings,
    /// This node's right to serve its shards now.
    lease: Arc<OwnershipLease>,
    /// The leader's side of ownership leases.
    grants: Grants,
    /// The log index this node must have applied to be ready (0 until it has joined).
    ready_at: AtomicU64,
    /// Why this node could not take its place in the cluster, if it could not.
    formation_error: std::sync::Mutex<Option<ClusterError>>,
}

/// How long management calls keep trying to reach a leader.
const LEADER_WAIT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Opens Raft on `data_dir/raft.redb` and starts it. Must run inside a tokio runtime
    /// that lives as long as the node.
    pub async fn open(
        settings: ClusterSettings,
        data_dir: &Path,
        addr: NodeAddr,
        router: Router,
        metrics: Arc<Metrics>,
    ) -> Result<Cluster, OpenError> {
        let db = open_database(&data_dir.join("raft.redb"))?;
        let replica = Replica {
            state: Arc::new(ArcSwap::from_pointee(ClusterState::default())),
            trailers: Arc::new(DashMap::new()),
            router: router.clone(),
        };
        let state_machine = StateMachine::open(db.clone(), replica.clone(), metrics)?;
        let election = settings.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "playstate".into(),
            heartbeat_interval: settings.heartbeat_interval.as_millis() as u64,
            election_timeout_min: election,
            // A narrow range: openraft makes followers refuse votes for the maximum after
            // they last heard a leader, and a candidate with a shorter log wait twice the
            // maximum; with "twice the minimum" a leader's crash took 6 s to replace.
            election_timeout_max: election * 5 / 4,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: settings.snapshot_every / 5,
            // openraft's default (256) would leave a small cluster's log unpurged for good.
            purge_batch_size: (settings.snapshot_every / 10).max(1),
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?;
        let peers = Peers::new(&settings.secret);
        let network = Network {
            peers: peers.clone(),
            router,
            health: Arc::default(),
        };
        let raft = Raft::new(
            settings.node_id.0,
            Arc::new(config),
            network,
            LogStore::new(db),
            state_machine,
        )
        .await
        .map_err(|e| OpenError::Start(Box::new(e)))?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                id: settings.node_id,
                addr,
                raft,
                replica,
                peers,
                lease: Arc::new(OwnershipLease::new(settings.ownership_lease)),
                grants: Grants::new(settings.ownership_lease),
                settings,
                ready_at: AtomicU64::new(0),
                formation_error: std::sync::Mutex::new(None),
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn replica(&self) -> &Replica {
        &self.inner.replica
    }

    pub fn peers(&self) -> &Peers {
        &self.inner.peers
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    pub fn lease(&self) -> &Arc<OwnershipLease> {
        &self.inner.lease
    }

    pub(super) fn grants(&self) -> &Grants {
        &self.inner.grants
    }

    /// Members the leader has not renewed for `failover_after`: their leases have run out,
    /// so their shards may go to others (see `lease`). Empty unless this node leads.
    pub(super) fn silent_members(&self) -> BTreeSet<NodeId> {
        let me = self.id();
        let state = self.state();
        let mut silent: BTreeSet<NodeId> = self
            .grants()
            .silent(
                state.members.keys().copied().filter(|id| *id != me),
                self.settings().failover_after,
            )
            .into_iter()
            .collect();
        silent.extend(self.grants().restarted_members());
        silent
    }

    pub fn state(&self) -> Arc<ClusterState> {
        self.inner.replica.state.load_full()
    }

    /// Starts a new cluster, joins one, or rejoins the one this node's log belongs to.
    pub async fn form(&self, join: &[String]) -> Result<(), ClusterError> {
        let me = self.inner.id;
        let initialized = self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Failed(e.to_string()))?;
        if initialized {
            if self.state().removed.contains(&me) {
                return Err(ClusterError::Removed(me.0));
            }
            if !join.is_empty() {
                tracing::info!("this node has Raft state: rejoining from its log, not --join");
            }
            tracing::info!(node_id = me.0, "rejoining the cluster");
            let joined = self.rejoin().await?;
            self.inner.ready_at.store(joined, Ordering::Release);
            return Ok(());
        }
        if join.is_empty() {
            tracing::info!(
                node_id = me.0,
                "no Raft state and no --join: starting a new cluster"
            );
            let members = BTreeMap::from([(me.0, self.inner.addr.clone())]);
            self.inner
                .raft
                .initialize(members)
                .await
                .map_err(|e| ClusterError::Failed(format!("cannot initialize: {e}")))?;
            self.expect_applied(Request::Join {
                id: me.0,
                addr: self.inner.addr.clone(),
            })
            .await?;
            let index = self
                .expect_applied(Request::AssignAll {
                    id: me.0,
                    shards: self.inner.settings.shards,
                })
                .await?;
            self.inner.ready_at.store(index, Ordering::Release);
            return Ok(());
        }
        let joined = self.join_through(join).await?;
        self.inner
            .ready_at
            .store(joined.log_index, Ordering::Release);
        Ok(())
    }

    /// Asks the members at `addrs` (any of them; they pass it to the leader) to add this
    /// node, until one does.
    async fn join_through(&self, addrs: &[String]) -> Result<Joined, ClusterError> {
        let request = self.join_request();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            for addr in addrs {
                match self
                    .inner
                    .peers
                    .call::<AdminJoin>(addr, &request, Duration::from_secs(60))
                    .await
                {
                    Ok(joined) => {
                        tracing::info!(through = %addr, log_index = joined.log_index, "joined the cluster");
                        return Ok(joined);
                    }
                    Err(e) => match ClusterError::from(e) {
                        removed @ ClusterError::Removed(_) => return Err(removed),
                        ClusterError::Refused(why) => return Err(ClusterError::Refused(why)),
                        other => tracing::warn!(through = %addr, error = %other, "cannot join yet"),
                    },
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(ClusterError::Failed(format!(
                    "no member at {} accepted this node within 2 minutes",
                    addrs.join(", ")
                )));
            }
            attempt += 1;
            tokio::time::sleep(crate::retry::backoff(
                attempt,
                Duration::from_millis(200),
                Duration::from_secs(2),
            ))
            .await;
        }
    }

    fn join_request(&self) -> JoinRequest {
        JoinRequest {
            node_id: self.inner.id.0,
            player_addr: self.inner.addr.player_addr.clone(),
            cluster_addr: self.inner.addr.cluster_addr.clone(),
            store: self.inner.settings.shared_store.clone(),
        }
    }

    /// Tells the cluster this node is back (perhaps at new addresses), ready to own
    /// shards again. Returns the log index of that change.
    async fn rejoin(&self) -> Result<u64, ClusterError> {
        let request = Request::Join {
            id: self.inner.id.0,
            addr: self.inner.addr.clone(),
        };
        // A node removed while it was down (`cluster remove`) hears from no leader again:
        // it learns its fate from the others instead of waiting for one.
        tokio::select! {
            joined = self.expect_applied(request) => joined,
            () = self.until_others_see_me_gone() => Err(ClusterError::Removed(self.inner.id.0)),
        }
    }

    /// Returns once a member that has a leader reports this node in neither its member
    /// list nor its Raft membership.
    async fn until_others_see_me_gone(&self) {
        let me = self.inner.id.0;
        loop {
            let others: Vec<String> = self
                .state()
                .members
                .iter()
                .filter(|(id, _)| id.0 != me)
                .map(|(_, m)| m.addr.cluster_addr.clone())
                .collect();
            for addr in others {
                let report = self
                    .inner
                    .peers
                    .call::<AdminStatus>(&addr, &(), Duration::from_secs(2))
                    .await;
                if let Ok(report) = report
                    && report.leader.is_some_and(|l| l != me)
                    && !report.raft_members.contains(&me)
                    && !report.members.iter().any(|m| m.id == me)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Commits `request` and fails unless it was applied.
    async fn expect_applied(&self, request: Request) -> Result<u64, ClusterError> {
        let (response, index) = self.write_indexed(request).await?;
        match response {
            Response::Applied => Ok(index),
            Response::Refused(refusal) => Err(refusal.into()),
        }
    }

    /// Commits a metadata change through the leader (this node or another).
    pub async fn write(&self, request: Request) -> Result<Response, ClusterError> {
        self.write_indexed(request).await.map(|(r, _)| r)
    }

    /// As `write`, with the log index the change was committed at.
    pub async fn write_indexed(&self, request: Request) -> Result<(Response, u64), ClusterError> {
        let started = Instant::now();
        loop {
            match self.leader() {
                Some(leader) if leader == self.inner.id => {
                    match self.inner.raft.client_write(request.clone()).await {
                        Ok(written) => return Ok((written.data, written.log_id.index)),
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                        Err(e) => return Err(ClusterError::Failed(e.to_string())),
                    }
                }
                Some(leader) => {
                    if let Some(addr) = self.cluster_addr_of(leader) {
                        let sent = self
                            .inner
                            .peers
                            .call::<AdminWrite>(&addr, &request, Duration::from_secs(10))
                            .await;
                        match sent {
                            Ok(answer) => return Ok(answer),
                            Err(e) => {
                                tracing::debug!(leader = leader.0, error = %e, "write not taken; retrying")
                            }
                        }
                    }
                }
                None => {}
            }
            if started.elapsed() > LEADER_WAIT {
                return Err(ClusterError::NoLeader(LEADER_WAIT));
            }
            self.leader_changed_within(Duration::from_millis(200)).await;
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.inner
            .raft
            .metrics()
            .borrow()
            .current_leader
            .map(NodeId)
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.id)
    }

    async fn leader_changed_within(&self, timeout: Duration) {
        let mut metrics = self.inner.raft.metrics();
        let _ = tokio::time::timeout(timeout, metrics.changed()).await;
    }

    /// The cluster listener of a member: from the member list, else from Raft's membership.
    pub fn cluster_addr_of(&self, node: NodeId) -> Option<String> {
        if let Some(member) = self.state().members.get(&node) {
            return Some(member.addr.cluster_addr.clone());
        }
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&node.0)
            .map(|n| n.cluster_addr.clone())
    }

    /// Adds a node (leader only): as a learner that has caught up, then as a member that
    /// the controller gives shards (and a vote, while voters are wanted).
    pub async fn add_node(&self, request: JoinRequest) -> Result<Joined, ClusterError> {
        let id = NodeId(request.node_id);
        if self.state().removed.contains(&id) {
            return Err(ClusterError::Removed(id.0));
        }
        self.check_same_store(&request)?;
        let addr = NodeAddr {
            player_addr: request.player_addr,
            cluster_addr: request.cluster_addr,
        };
        let known = self
            .inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id.0)
            .is_some();
        if !known {
            tracing::info!(node_id = id.0, addr = %addr, "adding a learner");
            self.inner
                .raft
                .add_learner(id.0, addr.clone(), true)
                .await
                .map_err(|e| ClusterError::Failed(format!("cannot add node {id}: {e}")))?;
        }
        let index = self
            .expect_applied(Request::Join { id: id.0, addr })
            .await?;
        Ok(Joined { log_index: index })
    }

    /// A joining node must read and write the users' data where the members do, or the
    /// users of every shard it takes would lose what is stored about them.
    fn check_same_store(&self, request: &JoinRequest) -> Result<(), ClusterError> {
        let ours = &self.inner.settings.shared_store;
        match (ours, &request.store) {
            (Some(ours), Some(theirs)) if ours == theirs => Ok(()),
            (None, _) => Err(ClusterError::Refused(format!(
                "node {} keeps users' data in its embedded store, which no other node can \
                 read: a multi-node cluster needs a shared store (store.backend = \"dynamodb\")",
                self.inner.id
            ))),
            (Some(ours), theirs) => Err(ClusterError::Refused(format!(
                "the cluster keeps users' data in {ours}, node {} in {}: every member needs \
                 the same store",
                request.node_id,
                theirs.as_deref().unwrap_or("its embedded store")
            ))),
        }
    }

    /// Whether this node can serve: a member, with a leader known and a valid ownership
    /// lease, caught up with what was committed when it joined.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let ready_at = self.inner.ready_at.load(Ordering::Acquire);
        if ready_at == 0 {
            return Err(NotReady::NotJoined);
        }
        let state = self.state();
        if !state.members.contains_key(&self.inner.id) {
            return Err(NotReady::NotMember);
        }
        let metrics = self.inner.raft.metrics().borrow().clone();
        if metrics.current_leader.is_none() {
            return Err(NotReady::NoLeader);
        }
        if !self.inner.lease.is_valid() {
            return Err(NotReady::NoLease);
        }
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        if applied < ready_at {
            return Err(NotReady::CatchingUp { applied, ready_at });
        }
        Ok(())
    }

    /// Marks this node (or another) draining: its shards go to the others.
    pub async fn drain(&self, node: NodeId) -> Result<(), ClusterError> {
        self.expect_applied(Request::SetState {
            id: node.0,
            state: MemberState::Draining,
        })
        .await
        .map(|_| ())
    }

    /// Starts removing `node`: it drains, then the controller removes it. Returns once it
    /// is removed, or fails after `wait`.
    pub async fn leave(&self, node: NodeId, wait: Duration) -> Result<(), ClusterError> {
        let state = self.state();
        if state.removed.contains(&node) {
            return Ok(());
        }
        if !state.members.contains_key(&node) {
            return Err(ClusterError::Refused(format!(
                "node {node} is not a member"
            )));
        }
        self.expect_applied(Request::SetState {
            id: node.0,
            state: MemberState::Leaving,
        })
        .await?;
        tracing::info!(node_id = node.0, "node is leaving the cluster");
        let deadline = tokio::time::Instant::now() + wait;
        let removed = self
            .inner
            .replica
            .router
            .wait_for(|_| self.state().removed.contains(&node), deadline)
            .await;
        match removed {
            Some(_) => Ok(()),
            None => Err(ClusterError::Failed(format!(
                "node {node} is still leaving after {wait:?}; it will go on"
            ))),
        }
    }

    pub fn status(&self) -> StatusReport {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let state = self.state();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = state
            .members
            .iter()
            .map(|(id, m)| MemberReport {
                id: id.0,
                player_addr: m.addr.player_addr.clone(),
                cluster_addr: m.addr.cluster_addr.clone(),
                role: if voters.contains(&id.0) {
                    "voter"
                } else {
                    "learner"
                }
                .into(),
                state: m.state,
            })
            .collect();
        StatusReport {
            node_id: self.inner.id.0,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_applied: metrics.last_applied.map_or(0, |id| id.index),
            members,
            shards: state
                .shard_counts()
                .into_iter()
                .map(|(id, n)| (id.0.to_string(), n))
                .collect(),
            raft_members: membership.nodes().map(|(id, _)| *id).collect(),
            log_purged_upto: metrics.purged.map_or(0, |id| id.index),
            unreachable: self.silent_members().into_iter().map(|id| id.0).collect(),
            lease_valid: self.inner.lease.is_valid(),
            // The caller adds them: the node's workers are not the cluster's to know.
            workers: Vec::new(),
            handoffs: state
                .moves
                .values()
                .map(|m| MoveReport {
                    shard: m.shard.0,
                    from: m.from.0,
                    to: m.to.0,
                })
                .collect(),
        }
    }

    /// After this node was removed: waits until the remaining members have taken it out
    /// of the Raft membership too, so that they can elect a leader without it.
    pub async fn wait_out_of_membership(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.until_others_see_me_gone())
            .await
            .is_ok()
    }

    /// Keeps the Raft gauges current; runs for the node's life.
    pub async fn watch_metrics(self, metrics: Arc<Metrics>) {
        let mut raft_metrics = self.inner.raft.metrics();
        loop {
            {
                let m = raft_metrics.borrow_and_update();
                let cluster = &metrics.cluster;
                cluster
                    .is_leader
                    .set(i64::from(m.state == ServerState::Leader));
                cluster.term.set(m.current_term as i64);
                cluster
                    .last_applied
                    .set(m.last_applied.map_or(0, |id| id.index) as i64);
            }
            if raft_metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Commits a Raft membership change (leader only); `retain` keeps removed voters as
    /// learners.
    pub(super) async fn change_membership(
        &self,
        change: ChangeMembers<u64, NodeAddr>,
        retain: bool,
    ) -> Result<(), ClusterError> {
        self.inner
            .raft
            .change_membership(change, retain)
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Failed(format!("membership change: {e}")))
    }

    /// Whether this node took its place in the cluster during this run.
    pub fn has_formed(&self) -> bool {
        self.inner.ready_at.load(Ordering::Acquire) > 0
    }

    pub fn set_formation_error(&self, error: ClusterError) {
        *self.inner.formation_error.lock().expect("not poisoned") = Some(error);
    }

    pub fn formation_error(&self) -> Option<ClusterError> {
        self.inner
            .formation_error
            .lock()
            .expect("not poisoned")
            .clone()
    }

    /// Stops Raft (at the very end of a node's life).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not stop cleanly");
        }
    }
}
