//! Every request: a correlation id (honoured or generated, always echoed), one access-log
//! line, and its count and latency by route.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, web};

use super::AppState;
use crate::cluster::endpoint::Endpoint;
use crate::config::RequestLog;
use crate::domain::UserId;
use crate::telemetry::{Metrics, RouteMetrics};
use crate::users::{Forward, REQUEST_CORRELATION_ID};

pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Label for requests that matched no route: one series, whatever the path.
const UNMATCHED: &str = "unmatched";

/// The user a request acted for, noted by its handler for the access log.
struct RequestUser(UserId);

/// Records the request's user for the access log (skipped when nothing would log it).
pub fn note_user(req: &HttpRequest, user: &UserId) {
    let logging = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.request_log != RequestLog::Off);
    if logging {
        req.extensions_mut().insert(RequestUser(user.clone()));
    }
}

pub async fn observe(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let started = Instant::now();
    let correlation = correlation_id(req.headers().get(&CORRELATION_ID));
    let method = method_label(req.method());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let refusal = state
        .as_ref()
        .and_then(|state| state.limits.refusal(&mut req));
    let mut res = match refusal {
        // Commands forwarded to another node take the id along (see `ForwardedCommand`).
        None => REQUEST_CORRELATION_ID
            .scope(correlation.clone(), next.call(req))
            .await?
            .map_into_left_body(),
        Some(refusal) => req.into_response(refusal).map_into_right_body(),
    };
    if let Some(state) = &state {
        state.limits.finish(&mut res);
    }
    let elapsed = started.elapsed();
    let status = res.status();
    let route = res.request().match_name().unwrap_or(UNMATCHED);
    if let Some(state) = &state {
        record(
            &state.metrics,
            route,
            method,
            status.as_u16(),
            elapsed.as_secs_f64(),
        );
        if should_log(state.request_log, status) {
            let user = res
                .request()
                .extensions()
                .get::<RequestUser>()
                .map(|u| u.0.clone());
            access_log(
                method,
                route,
                res.request().path(),
                status,
                elapsed.as_secs_f64() * 1000.0,
                user.as_ref().map(UserId::as_str),
                correlation.to_str().unwrap_or_default(),
            );
        }
    }
    res.headers_mut().insert(CORRELATION_ID, correlation);
    Ok(res)
}

fn should_log(policy: RequestLog, status: StatusCode) -> bool {
    match policy {
        RequestLog::All => true,
        RequestLog::Errors => status.as_u16() >= 400,
        RequestLog::Off => false,
    }
}

/// Error for ours (5xx), info otherwise: a client's mistake is not the node's, and a
/// warning per malformed request would let any scanner flood the warnings (an access
/// line per request is what `log.requests` asks for, at info).
fn access_log(
    method: &str,
    route: &str,
    path: &str,
    status: StatusCode,
    latency_ms: f64,
    user: Option<&str>,
    correlation_id: &str,
) {
    let status = status.as_u16();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                method,
                route,
                path,
                status,
                latency_ms,
                user,
                correlation_id,
                "request"
            )
        };
    }
    // A 503 is the node shedding load or waiting for a shard's owner, by design and with
    // Retry-After: a flood of refused connections must not look like a flood of faults.
    match status {
        503 => line!(warn),
        500.. => line!(error),
        _ => line!(info),
    }
}

/// The owner's access line for one command another node forwarded: it carries the
/// correlation id of the request the command serves, as the sender's access line does.
pub fn forwarded_access_log(
    policy: RequestLog,
    command: &str,
    user: &UserId,
    outcome: &str,
    latency_ms: f64,
    correlation_id: Option<&str>,
) {
    let failed = outcome != "ok";
    let logged = match policy {
        RequestLog::All => true,
        RequestLog::Errors => failed,
        RequestLog::Off => false,
    };
    if !logged {
        return;
    }
    let user = user.as_str();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                route = Forward::PATH,
                command,
                user,
                outcome,
                latency_ms,
                correlation_id,
                "forwarded command"
            )
        };
    }
    if failed { line!(warn) } else { line!(info) }
}

thread_local! {
    // Per worker thread, so recording never takes a lock shared across threads.
    static ROUTES: RefCell<HashMap<Box<str>, RouteMetrics>> = RefCell::new(HashMap::new());
}

fn record(metrics: &Metrics, route: &str, method: &'static str, status: u16, seconds: f64) {
    ROUTES.with(|routes| {
        let mut routes = routes.borrow_mut();
        if let Some(handles) = routes.get_mut(route) {
            handles.observe(method, status, seconds);
        } else {
            let mut handles = metrics.route(route);
            handles.observe(method, status, seconds);
            routes.insert(route.into(), handles);
        }
    });
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The caller's correlation id if it is a sane one, else a fresh UUID.
fn correlation_id(incoming: Option<&HeaderValue>) -> HeaderValue {
    let sane = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
    };
    if let Some(value) = incoming.filter(sane) {
        return value.clone();
    }
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).expect("a UUID is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_correlation_ids_and_replaces_others() {
        let given = HeaderValue::from_static("req-42");
        assert_eq!(correlation_id(Some(&given)), given);
        let spaced = HeaderValue::from_static("has space");
        assert_ne!(correlation_id(Some(&spaced)), spaced);
        let long = HeaderValue::from_str(&"x".repeat(129)).unwrap();
        assert_eq!(correlation_id(Some(&long)).len(), 36);
        assert_eq!(correlation_id(None).len(), 36);
    }
}
