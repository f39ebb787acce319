//! Metrics, in Prometheus; handles used on hot paths are resolved once here, so recording
//! one is a single atomic add. Logs are set up by `crate::logging`, a layer higher: they
//! need the config and the API's client-fault filter, and everything below uses metrics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, dense below 10 ms where the hot path lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct HeartbeatCounters {
    pub taken: IntCounter,
    pub renewed: IntCounter,
    pub refused: IntCounter,
}

pub struct StoreWriteCounters {
    pub progress_put: IntCounter,
    pub progress_delete: IntCounter,
    pub watchlist_put: IntCounter,
    pub watchlist_delete: IntCounter,
}

/// The node's background workers (see `worker`). Created registered, so neither can
/// exist without the other.
pub struct WorkerMetrics {
    pub running: IntGaugeVec,
    pub restarts: IntCounterVec,
}

impl WorkerMetrics {
    fn registered(registry: &Registry) -> WorkerMetrics {
        let running = IntGaugeVec::new(
            Opts::new(
                "playstate_worker_running",
                "1 while a background worker runs, 0 while it waits to restart or has ended.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        let restarts = IntCounterVec::new(
            Opts::new(
                "playstate_worker_restarts_total",
                "Background workers restarted after they failed or panicked.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(running.clone()))
            .expect("metric names are unique");
        registry
            .register(Box::new(restarts.clone()))
            .expect("metric names are unique");
        WorkerMetrics { running, restarts }
    }
}

/// The cluster's own metrics: membership, Raft, forwarding and handoffs.
pub struct ClusterMetrics {
    members: prometheus::IntGaugeVec,
    pub is_leader: IntGauge,
    pub term: IntGauge,
    pub last_applied: IntGauge,
    pub shards_owned: IntGauge,
    pub shards: IntGauge,
    pub shards_moving: IntGauge,
    forwarded: IntCounterVec,
    pub forward_duration: Histogram,
    pub forward_requests: IntCounter,
    pub shards_moved: IntCounter,
    pub handoff_duration: Histogram,
    pub handoff_waited: IntCounter,
    pub handoff_failures: IntCounter,
    pub failover_shards: IntCounter,
    pub failover_slots_recovered: IntCounter,
    pub failover_progress_recovered: IntCounter,
    pub lease_valid: IntGauge,
    backup_sends: IntCounterVec,
    pub backup_users: IntGauge,
}

impl ClusterMetrics {
    fn new() -> ClusterMetrics {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric")
        };
        ClusterMetrics {
            members: prometheus::IntGaugeVec::new(
                Opts::new(
                    "playstate_cluster_members",
                    "Cluster members by state (active, draining, leaving), as this node sees them.",
                ),
                &["state"],
            )
            .expect("valid metric"),
            is_leader: gauge(
                "playstate_cluster_is_leader",
                "1 if this node is the Raft leader.",
            ),
            term: gauge("playstate_cluster_term", "The Raft term this node is in."),
            last_applied: gauge(
                "playstate_cluster_last_applied",
                "Index of the last Raft log entry this node applied.",
            ),
            shards_owned: gauge("playstate_cluster_shards_owned", "Shards this node owns."),
            shards: gauge(
                "playstate_cluster_shards",
                "Shards in the cluster's shard table (cluster.shards), as this node sees it.",
            ),
            shards_moving: gauge(
                "playstate_cluster_shards_moving",
                "Shards being handed from one node to another, as this node's shard table \
                 says.",
            ),
            forwarded: IntCounterVec::new(
                Opts::new(
                    "playstate_forwarded_commands_total",
                    "User commands forwarded to the owning node, by outcome: ok, moved (the \
                     owner's table was newer; retried), unavailable, error.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            forward_duration: histogram(
                "playstate_forward_duration_seconds",
                "Time from sending a forwarded command to its answer.",
                LATENCY_BUCKETS,
            ),
            forward_requests: counter(
                "playstate_forward_requests_total",
                "HTTP requests that carried forwarded commands (stream commands share them: \
                 forwarded commands / requests is the batching factor).",
            ),
            shards_moved: counter(
                "playstate_handoff_shards_moved_total",
                "Shards this node handed to another node (counted by the old owner).",
            ),
            handoff_duration: histogram(
                "playstate_handoff_duration_seconds",
                "Time one batch of shards spent moving, from stop to new owner (leader).",
                &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            handoff_waited: counter(
                "playstate_handoff_waited_requests_total",
                "Requests that waited for a shard being handed over (or for a table).",
            ),
            handoff_failures: counter(
                "playstate_handoff_failures_total",
                "Handoff batches the leader gave up (their shards stay with the old owner \
                 until a later move).",
            ),
            failover_shards: counter(
                "playstate_failover_shards_total",
                "Shards the leader moved from a member it could not reach to their backups.",
            ),
            failover_slots_recovered: counter(
                "playstate_failover_slots_recovered_total",
                "Live slots this node took over from its backup copy after a failover.",
            ),
            failover_progress_recovered: counter(
                "playstate_failover_progress_recovered_total",
                "Unstored progress entries this node stored from its backup copy after a \
                 failover.",
            ),
            lease_valid: gauge(
                "playstate_cluster_lease_valid",
                "1 while this node holds its ownership lease (may serve its shards).",
            ),
            backup_sends: IntCounterVec::new(
                Opts::new(
                    "playstate_backup_sends_total",
                    "Batches of slot and progress changes sent to backup nodes, by outcome \
                     (ok, error).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            backup_users: gauge(
                "playstate_backup_users",
                "Users whose slots or unstored progress this node keeps as a backup.",
            ),
        }
    }

    pub fn members(&self, state: &str) -> IntGauge {
        self.members.with_label_values(&[state])
    }

    pub fn backup_sent(&self, outcome: &str) -> IntCounter {
        self.backup_sends.with_label_values(&[outcome])
    }

    pub fn forwarded(&self, outcome: &str) -> IntCounter {
        self.forwarded.with_label_values(&[outcome])
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.members.clone()),
            Box::new(self.is_leader.clone()),
            Box::new(self.term.clone()),
            Box::new(self.last_applied.clone()),
            Box::new(self.shards_owned.clone()),
            Box::new(self.shards.clone()),
            Box::new(self.shards_moving.clone()),
            Box::new(self.forwarded.clone()),
            Box::new(self.forward_duration.clone()),
            Box::new(self.forward_requests.clone()),
            Box::new(self.shards_moved.clone()),
            Box::new(self.handoff_duration.clone()),
            Box::new(self.handoff_waited.clone()),
            Box::new(self.handoff_failures.clone()),
            Box::new(self.failover_shards.clone()),
            Box::new(self.failover_slots_recovered.clone()),
            Box::new(self.failover_progress_recovered.clone()),
            Box::new(self.lease_valid.clone()),
            Box::new(self.backup_sends.clone()),
            Box::new(self.backup_users.clone()),
        ]
    }
}

pub struct Metrics {
    registry: Registry,
    pub cluster: ClusterMetrics,
    pub workers: WorkerMetrics,
    pub store_reads: IntCounter,
    pub store_writes: StoreWriteCounters,
    pub store_errors: IntCounter,
    pub progress_updates: IntCounter,
    pub progress_dirty_entries: IntGauge,
    pub progress_dirty_budget: IntGauge,
    pub progress_refused: IntCounter,
    pub flush_duration: Histogram,
    pub flush_failures: IntCounter,
    pub progress_lost: IntCounter,
    pub failover_progress_discarded: IntCounter,
    bi_events: IntCounterVec,
    pub outbox_depth: IntGauge,
    pub outbox_capacity: IntGauge,
    trailer_messages: IntCounterVec,
    tmdb_requests: IntCounterVec,
    pub tmdb_last_status: IntGauge,
    trailer_lookups: IntCounterVec,
    trailer_refreshes: IntCounterVec,
    pub trailer_cache_entries: IntGauge,
    pub heartbeats: HeartbeatCounters,
    pub releases: IntCounter,
    pub slots_expired: IntCounter,
    pub active_streams: IntGauge,
    pub active_users: IntGauge,
    pub passivations: IntCounter,
    pub actor_unavailable: IntCounter,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    pub http_connections_open: IntGauge,
    pub http_connections_refused: IntCounter,
    pub http_body_timeouts: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let heartbeats = IntCounterVec::new(
            Opts::new(
                "playstate_heartbeats_total",
                "Stream heartbeats by outcome: taken (new slot), renewed, refused (limit).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "playstate_http_requests_total",
                "HTTP requests by route pattern, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "playstate_http_request_duration_seconds",
                "HTTP request latency by route pattern, from first byte read to response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let store_writes = IntCounterVec::new(
            Opts::new(
                "playstate_store_writes_total",
                "Items written to the store, by operation.",
            ),
            &["op"],
        )
        .expect("valid metric");
        let bi_events = IntCounterVec::new(
            Opts::new(
                "playstate_bi_events_total",
                "BI events by event and outcome: queued, delivered, failed (a delivery attempt).",
            ),
            &["event", "outcome"],
        )
        .expect("valid metric");
        let labelled = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
        };
        let trailer_messages = labelled(
            "playstate_trailer_messages_total",
            "New-content messages by outcome: onboarded, rejected (never succeeds), retry.",
            "outcome",
        );
        let tmdb_requests = labelled(
            "playstate_tmdb_requests_total",
            "TMDB requests by HTTP status (or error).",
            "status",
        );
        let trailer_lookups = labelled(
            "playstate_trailer_lookups_total",
            "Trailer reads by result: hit, miss, invalid.",
            "result",
        );
        let trailer_refreshes = labelled(
            "playstate_trailer_refreshes_total",
            "Stale trailer entries re-resolved, by outcome.",
            "outcome",
        );
        let metrics = Metrics {
            trailer_messages: trailer_messages.clone(),
            tmdb_requests: tmdb_requests.clone(),
            tmdb_last_status: IntGauge::new(
                "playstate_tmdb_last_status",
                "HTTP status of TMDB's latest answer to this node: 0 before any TMDB request \
                 (or with onboarding off), -1 when the latest got no answer (network error \
                 or timeout).",
            )
            .expect("valid metric"),
            trailer_lookups: trailer_lookups.clone(),
            trailer_refreshes: trailer_refreshes.clone(),
            trailer_cache_entries: IntGauge::new(
                "playstate_trailer_cache_entries",
                "Content URLs in this node's trailer cache.",
            )
            .expect("valid metric"),
            store_reads: IntCounter::new(
                "playstate_store_reads_total",
                "User libraries loaded from the store.",
            )
            .expect("valid metric"),
            store_writes: StoreWriteCounters {
                progress_put: store_writes.with_label_values(&["progress_put"]),
                progress_delete: store_writes.with_label_values(&["progress_delete"]),
                watchlist_put: store_writes.with_label_values(&["watchlist_put"]),
                watchlist_delete: store_writes.with_label_values(&["watchlist_delete"]),
            },
            store_errors: IntCounter::new(
                "playstate_store_errors_total",
                "Store operations that failed.",
            )
            .expect("valid metric"),
            progress_updates: IntCounter::new(
                "playstate_progress_updates_total",
                "Progress updates accepted (each lands in memory; flushes write them).",
            )
            .expect("valid metric"),
            progress_dirty_entries: IntGauge::new(
                "playstate_progress_dirty_entries",
                "Progress entries changed in memory and not yet stored.",
            )
            .expect("valid metric"),
            progress_dirty_budget: IntGauge::new(
                "playstate_progress_dirty_budget",
                "Unstored progress entries this node may hold (progress.max_dirty_entries); \
                 beyond it, updates are refused with 503.",
            )
            .expect("valid metric"),
            progress_refused: IntCounter::new(
                "playstate_progress_refused_total",
                "Progress updates refused with 503 because too much was unflushed.",
            )
            .expect("valid metric"),
            flush_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "playstate_flush_duration_seconds",
                    "Time to write one batch of dirty progress to the store.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            flush_failures: IntCounter::new(
                "playstate_flush_failures_total",
                "Progress flushes that failed and will be retried.",
            )
            .expect("valid metric"),
            progress_lost: IntCounter::new(
                "playstate_progress_lost_total",
                "Progress entries (a user's position in one asset) whose last acknowledged \
                 value was never stored: those the store did not take before a shutdown \
                 ended (exact), and, counted at the next start, those a crash lost that no \
                 backup held (an upper bound: never fewer; exact once the count was \
                 steady for 250 ms, else at most 16 entries more, or twice what went at \
                 risk in the last 25 ms).",
            )
            .expect("valid metric"),
            failover_progress_discarded: IntCounter::new(
                "playstate_failover_progress_discarded_total",
                "Unstored progress entries this node dropped because their shard moved by \
                 failover while it was cut off (the backup's copy was stored instead; at \
                 most one backup interval of updates is missing from it).",
            )
            .expect("valid metric"),
            bi_events: bi_events.clone(),
            outbox_depth: IntGauge::new(
                "playstate_outbox_depth",
                "BI events waiting for delivery.",
            )
            .expect("valid metric"),
            outbox_capacity: IntGauge::new(
                "playstate_outbox_capacity",
                "BI events the outbox holds at most (events.outbox_capacity); when it is \
                 full, changes that would emit one are refused with 503.",
            )
            .expect("valid metric"),
            heartbeats: HeartbeatCounters {
                taken: heartbeats.with_label_values(&["taken"]),
                renewed: heartbeats.with_label_values(&["renewed"]),
                refused: heartbeats.with_label_values(&["refused"]),
            },
            releases: IntCounter::new(
                "playstate_stream_releases_total",
                "Stream slots freed by an explicit stop (DELETE).",
            )
            .expect("valid metric"),
            slots_expired: IntCounter::new(
                "playstate_stream_slots_expired_total",
                "Stream slots freed because their lease ended without a heartbeat.",
            )
            .expect("valid metric"),
            active_streams: IntGauge::new(
                "playstate_active_streams",
                "Stream slots held on this node (expired slots leave within one actor tick).",
            )
            .expect("valid metric"),
            active_users: IntGauge::new(
                "playstate_active_users",
                "User actors running on this node.",
            )
            .expect("valid metric"),
            passivations: IntCounter::new(
                "playstate_actor_passivations_total",
                "User actors stopped after being idle.",
            )
            .expect("valid metric"),
            actor_unavailable: IntCounter::new(
                "playstate_actor_unavailable_total",
                "Requests answered 503 because their user actor did not answer.",
            )
            .expect("valid metric"),
            http_requests,
            http_duration,
            http_connections_open: IntGauge::new(
                "playstate_http_connections_open",
                "Open player connections, including those being refused.",
            )
            .expect("valid metric"),
            http_connections_refused: IntCounter::new(
                "playstate_http_connections_refused_total",
                "Player connections answered 503 and closed: server.max_connections were open.",
            )
            .expect("valid metric"),
            http_body_timeouts: IntCounter::new(
                "playstate_http_body_timeouts_total",
                "Requests answered 408 and closed: their body did not arrive within server.body_timeout.",
            )
            .expect("valid metric"),
            cluster: ClusterMetrics::new(),
            workers: WorkerMetrics::registered(&registry),
            registry,
        };
        metrics.register_all(vec![
            Box::new(heartbeats),
            Box::new(store_writes),
            Box::new(bi_events),
            Box::new(trailer_messages),
            Box::new(tmdb_requests),
            Box::new(trailer_lookups),
            Box::new(trailer_refreshes),
        ]);
        metrics
    }

    /// The counter of one BI event outcome.
    pub fn bi_events(&self, event: &str, outcome: &str) -> IntCounter {
        self.bi_events.with_label_values(&[event, outcome])
    }

    pub fn trailer_messages(&self, outcome: &str) -> IntCounter {
        self.trailer_messages.with_label_values(&[outcome])
    }

    pub fn tmdb_requests(&self, status: &str) -> IntCounter {
        self.tmdb_requests.with_label_values(&[status])
    }

    pub fn trailer_lookups(&self, result: &str) -> IntCounter {
        self.trailer_lookups.with_label_values(&[result])
    }

    pub fn trailer_refreshes(&self, outcome: &str) -> IntCounter {
        self.trailer_refreshes.with_label_values(&[outcome])
    }

    fn register_all(&self, vecs: Vec<Box<dyn prometheus::core::Collector>>) {
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.store_reads.clone()),
            Box::new(self.store_errors.clone()),
            Box::new(self.progress_updates.clone()),
            Box::new(self.progress_dirty_entries.clone()),
            Box::new(self.progress_dirty_budget.clone()),
            Box::new(self.progress_refused.clone()),
            Box::new(self.flush_duration.clone()),
            Box::new(self.flush_failures.clone()),
            Box::new(self.progress_lost.clone()),
            Box::new(self.failover_progress_discarded.clone()),
            Box::new(self.outbox_depth.clone()),
            Box::new(self.outbox_capacity.clone()),
            Box::new(self.tmdb_last_status.clone()),
            Box::new(self.trailer_cache_entries.clone()),
            Box::new(self.releases.clone()),
            Box::new(self.slots_expired.clone()),
            Box::new(self.active_streams.clone()),
            Box::new(self.active_users.clone()),
            Box::new(self.passivations.clone()),
            Box::new(self.actor_unavailable.clone()),
            Box::new(self.http_requests.clone()),
            Box::new(self.http_duration.clone()),
            Box::new(self.http_connections_open.clone()),
            Box::new(self.http_connections_refused.clone()),
            Box::new(self.http_body_timeouts.clone()),
        ];
        collectors.extend(vecs);
        collectors.extend(self.cluster.collectors());
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    /// Handles for one route: resolved once per worker thread and route, then reused.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            duration: self.http_duration.with_label_values(&[route]),
            requests: self.http_requests.clone(),
            by_status: Vec::new(),
            route: route.into(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Per-route handles cached by each HTTP worker (see `api::middleware`).
pub struct RouteMetrics {
    route: Box<str>,
    duration: Histogram,
    requests: IntCounterVec,
    /// (method, status) pairs seen so far on this route; a handful in practice.
    by_status: Vec<(&'static str, u16, IntCounter)>,
}

impl RouteMetrics {
    pub fn observe(&mut self, method: &'static str, status: u16, seconds: f64) {
        self.duration.observe(seconds);
        if let Some((_, _, counter)) = self
            .by_status
            .iter()
            .find(|(m, s, _)| *s == status && *m == method)
        {
            counter.inc();
            return;
        }
        let counter =
            self.requests
                .with_label_values(&[&*self.route, method, status.to_string().as_str()]);
        counter.inc();
        self.by_status.push((method, status, counter));
    }
}

/// The text of a log event (its `message` field), for the logging layers that turn other
/// crates' lines into ours (`api::client_faults`, `cluster::peer_health`).
#[derive(Default)]
pub struct EventMessage(pub String);

impl EventMessage {
    pub fn of(event: &tracing::Event<'_>) -> EventMessage {
        let mut message = EventMessage::default();
        event.record(&mut message);
        message
    }
}

impl tracing::field::Visit for EventMessage {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
