//! Builds a node from its configuration, serves it, and shuts it down gracefully.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::actors::{ActorSettings, Registry};
use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::cluster::{NodeId, Router, ShardTable};
use crate::config::{Config, threads_or_cores};
use crate::domain::StreamPolicy;
use crate::telemetry::Metrics;
use crate::users::Users;

fn stream_policy(config: &Config) -> StreamPolicy {
    let streams = &config.streams;
    StreamPolicy {
        default_limit: streams.limit,
        plans: streams
            .plans
            .iter()
            .map(|(name, limit)| (name.as_str().into(), *limit))
            .collect::<HashMap<_, _>>(),
        heartbeat_lease: config.heartbeat_lease().into(),
        subscription_lease: streams.subscription_lease.into(),
    }
}

/// Runs a node until SIGTERM or SIGINT, then drains it. Must run inside an actix `System`.
pub async fn run(config: Config) -> io::Result<()> {
    std::fs::create_dir_all(&config.storage.data_dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot create data dir {}: {e}",
                config.storage.data_dir.display()
            ),
        )
    })?;
    let metrics = Arc::new(Metrics::new());
    let clock = if config.dev.manual_clock {
        tracing::warn!("dev.manual_clock is on: time only moves via POST /dev/clock/advance");
        Clock::manual()
    } else {
        Clock::System
    };
    let actor_threads = threads_or_cores(config.actors.threads);
    let registry = Registry::start(
        ActorSettings {
            threads: actor_threads,
            idle_timeout: config.actors.idle_timeout,
            tick: config.actors.tick,
            call_timeout: config.actors.call_timeout,
        },
        clock.clone(),
        metrics.clone(),
    );
    let local = NodeId(config.cluster.node_id);
    let router = Router::new(local, ShardTable::single_node(config.cluster.shards, local));
    let users = Users::new(
        router,
        registry.clone(),
        stream_policy(&config),
        metrics.clone(),
    );
    let plan_header = if config.streams.trust_plan_header {
        Some(
            HeaderName::try_from(config.streams.plan_header.as_str()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("streams.plan_header: {e}"),
                )
            })?,
        )
    } else {
        None
    };
    let state = web::Data::new(AppState {
        users,
        metrics,
        clock,
        max_body_bytes: config.server.max_body_bytes,
        plan_header,
        request_log: config.log.requests,
    });

    let listener = TcpListener::bind(config.server.listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", config.server.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    let max_body = config.server.max_body_bytes;
    let dev_endpoints = config.dev.manual_clock;
    let http_workers = threads_or_cores(config.server.workers);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(from_fn(api::middleware::observe))
            .configure(|cfg| api::routes(cfg, dev_endpoints))
            .default_service(web::to(api::ops::not_found))
    })
    .workers(http_workers)
    .disable_signals()
    .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1))
    .listen(listener)?
    .run();

    tracing::info!(
        addr = %addr,
        node_id = local.0,
        http_workers,
        actor_threads,
        data_dir = %config.storage.data_dir.display(),
        stream_limit = config.streams.limit,
        "listening"
    );

    let handle = server.handle();
    actix_rt::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            "shutting down: no new connections, finishing in-flight requests"
        );
        handle.stop(true).await;
    });
    server.await?;
    tracing::info!(
        actors = registry.len(),
        "HTTP stopped; stopping user actors"
    );
    registry.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; only SIGINT stops this node");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
