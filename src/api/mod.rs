//! HTTP: playstate's own routes under `/v1`, the seed systems' routes beside them, and the
//! operational endpoints. Handlers parse and validate, call `Users`, and render; the
//! rules live below them.

pub mod auth;
pub mod body;
pub mod client_faults;
pub mod cluster;
pub mod compat;
pub mod error;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod params;
pub mod trailers;
pub mod v1;

use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, Resource, web};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::RequestLog;
use crate::domain::Seconds;
use crate::store::UserStore;
use crate::telemetry::Metrics;
use crate::users::Users;

/// What every handler can reach.
pub struct AppState {
    pub users: Users,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub max_body_bytes: usize,
    /// The header a trusted gateway sets to choose the caller's plan, if trusted.
    pub plan_header: Option<HeaderName>,
    pub request_log: RequestLog,
    pub catalog: Catalog,
    /// Progress above this is refused with 416.
    pub max_progress_seconds: Seconds,
    /// Verifies bearer tokens when configured; else they are only decoded.
    pub jwt: Option<auth::JwtVerifier>,
    /// Checked by `/ready`.
    pub store: Arc<dyn UserStore>,
    pub trailers: trailers::TrailersApi,
    /// This node's place in the cluster: `/ready`, and the cluster listener's routes.
    pub cluster: crate::cluster::Cluster,
    /// The player listener's connection cap and body deadline (`middleware::observe`).
    pub limits: std::sync::Arc<limits::HttpLimits>,
    /// How the node's background workers are doing (`cluster status`).
    pub workers: crate::worker::WorkerStatuses,
}

impl AppState {
    /// The plan named by the trusted gateway header, when that header is trusted.
    pub fn trusted_plan<'r>(&self, req: &'r HttpRequest) -> Option<&'r str> {
        let name = self.plan_header.as_ref()?;
        req.headers()
            .get(name)?
            .to_str()
            .ok()
            .filter(|p| !p.is_empty())
    }
}

/// A resource named after its own pattern, so metrics and logs can label requests by route
/// without allocating (`HttpRequest::match_name` borrows; `match_pattern` allocates).
pub(crate) fn route(pattern: &'static str) -> Resource {
    #[cfg(test)]
    REGISTERED.with_borrow_mut(|patterns| patterns.push(pattern));
    web::resource(pattern).name(pattern)
}

#[cfg(test)]
thread_local! {
    /// Every pattern `route` made on this thread: what the route-coverage test in
    /// `openapi` compares with the document.
    pub(crate) static REGISTERED: std::cell::RefCell<Vec<&'static str>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Registers every route.
/// Registers every route. The dev-only ones exist only when enabled (404 otherwise).
pub fn routes(cfg: &mut web::ServiceConfig, dev: DevRoutes) {
    v1::routes(cfg);
    compat::routes(cfg);
    trailers::routes(cfg, dev.publish);
    ops::routes(cfg, dev.clock);
    openapi::routes(cfg);
}

#[derive(Clone, Copy, Debug)]
pub struct DevRoutes {
    /// `POST /dev/clock/advance`
    pub clock: bool,
    /// `POST /non-production/utils/publish`
    pub publish: bool,
}
