//! The cluster listener: Raft RPCs (`raft`), what nodes ask each other about users and
//! shards (`peer`: forwarded commands, backups, leases, handoffs) and the admin API
//! (`admin`). Never on the player listener. Every route needs `Authorization: Bearer
//! <secret>`. Each route is a `cluster::endpoint::Endpoint`, served here at its path.

mod admin;
mod peer;
mod raft;

use std::future::Future;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpResponse, web};

use super::AppState;
use super::error::ClusterRouteError;
use crate::cluster::endpoint::{Endpoint, Method};

/// Where every cluster route lives; the secret is checked here, before any body is read.
const SCOPE: &str = "/cluster";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(SCOPE)
            .wrap(from_fn(require_secret))
            .app_data(web::JsonConfig::default().error_handler(|e, _| {
                let message = e.to_string();
                actix_web::error::InternalError::from_response(
                    e,
                    HttpResponse::BadRequest().json(serde_json::json!({ "error": message })),
                )
                .into()
            }))
            .configure(raft::routes)
            .configure(peer::routes)
            .configure(admin::routes),
    );
}

/// What a cluster route answers: its endpoint's reply, or why not.
type Answer<E> = Result<<E as Endpoint>::Reply, ClusterRouteError>;

/// Serves endpoint `E`, a POST, with `handler`, which takes the request body.
fn serve<E, H, F>(cfg: &mut web::ServiceConfig, handler: H)
where
    E: Endpoint,
    H: Fn(web::Data<AppState>, E::Request) -> F + Clone + 'static,
    F: Future<Output = Answer<E>> + 'static,
{
    assert_eq!(E::METHOD, Method::Post, "{} has no body", E::PATH);
    let handle = move |state: web::Data<AppState>, request: web::Json<E::Request>| {
        let answer = handler(state, request.into_inner());
        async move { respond::<E>(answer.await) }
    };
    cfg.route(path_in_scope::<E>(), web::post().to(handle));
}

/// Serves endpoint `E`, a GET, with `handler`.
fn serve_get<E, H, F>(cfg: &mut web::ServiceConfig, handler: H)
where
    E: Endpoint<Request = ()>,
    H: Fn(web::Data<AppState>) -> F + Clone + 'static,
    F: Future<Output = Answer<E>> + 'static,
{
    assert_eq!(E::METHOD, Method::Get, "{} takes a body", E::PATH);
    let handle = move |state: web::Data<AppState>| {
        let answer = handler(state);
        async move { respond::<E>(answer.await) }
    };
    cfg.route(path_in_scope::<E>(), web::get().to(handle));
}

fn path_in_scope<E: Endpoint>() -> &'static str {
    E::PATH
        .strip_prefix(SCOPE)
        .unwrap_or_else(|| panic!("{} is not under {SCOPE}", E::PATH))
}

fn respond<E: Endpoint>(answer: Answer<E>) -> HttpResponse {
    match answer {
        Ok(reply) => HttpResponse::Ok().json(reply),
        Err(e) => e.render(),
    }
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
