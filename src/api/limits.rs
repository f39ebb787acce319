//! What one client may take of a node: a share of its connections, and a connection for
//! no longer than it takes to send a request.
//!
//! Request heads have actix's own deadline (`server.header_timeout`, set on the server).
//! Bodies have none there, so a client that sends half a body and stalls would hold its
//! connection, and its file descriptor, for ever; enough of them stop the node answering
//! anyone. Here a body must arrive within `server.body_timeout` of its head.
//!
//! Connections are capped across all HTTP workers (`server.max_connections`). actix's own
//! cap is per worker and, once reached, stops accepting: the excess would wait unseen in
//! the kernel's backlog. Instead every connection is counted as it opens and the excess is
//! answered at once, 503 with `Retry-After`, and closed, so a flood costs the served
//! connections nothing but the accepts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::web::Bytes;
use futures_util::Stream;
use prometheus::{IntCounter, IntGauge};

use crate::telemetry::Metrics;

/// The player listener's limits, shared by its workers.
pub struct HttpLimits {
    max_connections: usize,
    open: AtomicUsize,
    body_timeout: Duration,
    open_gauge: IntGauge,
    refused: IntCounter,
    body_timeouts: IntCounter,
}

impl HttpLimits {
    pub fn new(max_connections: usize, body_timeout: Duration, metrics: &Metrics) -> Arc<Self> {
        Arc::new(HttpLimits {
            max_connections,
            open: AtomicUsize::new(0),
            body_timeout,
            open_gauge: metrics.http_connections_open.clone(),
            refused: metrics.http_connections_refused.clone(),
            body_timeouts: metrics.http_body_timeouts.clone(),
        })
    }

    /// Counts a new connection (actix's `on_connect`); the count drops with the
    /// connection's extensions, when actix lets go of the connection.
    pub fn on_connect(self: &Arc<Self>, extensions: &mut Extensions) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_gauge.inc();
        extensions.insert(ConnectionSlot {
            limits: self.clone(),
            admitted: open <= self.max_connections,
        });
    }

    /// Before a request is served (by `middleware::observe`, so that this costs no
    /// middleware layer of its own): the refusal for a connection over the cap; or, for
    /// an admitted request, `None` and a deadline on reading its body.
    pub fn refusal(&self, req: &mut ServiceRequest) -> Option<HttpResponse> {
        let admitted = req
            .conn_data::<ConnectionSlot>()
            .is_none_or(|slot| slot.admitted);
        if !admitted {
            self.refused.inc();
            return Some(HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "1"))
                .force_close()
                .content_type("application/problem+json")
                .body(
                    r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"this node has as many connections open as it serves (server.max_connections); retry"}"#,
                ));
        }
        if has_body(req.headers()) {
            let (_, payload) = req.parts_mut();
            let body = std::mem::replace(payload, Payload::None);
            req.set_payload(Payload::Stream {
                payload: Box::pin(BodyWithDeadline {
                    body,
                    deadline: tokio::time::Instant::now() + self.body_timeout,
                    timer: None,
                }),
            });
        }
        None
    }

    /// After a request was served: a body that missed its deadline leaves the rest of it
    /// unread, so the connection cannot be reused.
    pub fn finish<B>(&self, res: &mut ServiceResponse<B>) {
        if res.status() == StatusCode::REQUEST_TIMEOUT {
            self.body_timeouts.inc();
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
    }
}

/// A connection's place under the cap; gives it back when dropped.
struct ConnectionSlot {
    limits: Arc<HttpLimits>,
    admitted: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::Relaxed);
        self.limits.open_gauge.dec();
    }
}

/// Whether the request says a body follows (GETs and DELETEs without one skip the timer).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0")
}

/// Whether a body extractor failed because the body missed its deadline.
pub fn is_body_timeout(error: &actix_web::Error) -> bool {
    matches!(
        error.as_error::<PayloadError>(),
        Some(PayloadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut
    )
}

/// A request body that fails with `TimedOut` if it has not ended by its deadline.
struct BodyWithDeadline {
    body: Payload,
    deadline: tokio::time::Instant,
    /// Set only once the body has to be waited for: most bodies (a heartbeat's) come in
    /// the head's packet, and then no timer is ever registered.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for BodyWithDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = Pin::new(&mut self.body).poll_next(cx) {
            return Poll::Ready(item);
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Descriptors a node needs besides its player connections: the cluster listener and its
/// peers, the store, the log, the data files.
const DESCRIPTORS_BESIDES_PLAYERS: u64 = 1024;

/// Raises the process's open-file limit to what `max_connections` needs, as far as the
/// hard limit allows, and says so when that is not enough: without it the cap would be
/// the kernel's, whose excess connections fail unanswered at `accept`.
pub fn fit_open_file_limit(max_connections: usize) {
    let needed = max_connections as u64 + DESCRIPTORS_BESIDES_PLAYERS;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur < needed && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: needed.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = limit.rlim_cur,
                to = raised.rlim_cur,
                "raised the open-file limit for server.max_connections"
            );
            limit = raised;
        }
    }
    if limit.rlim_cur < needed {
        tracing::warn!(
            max_connections,
            open_file_limit = limit.rlim_cur,
            "server.max_connections is more than this process can open files for (ulimit -n); \
             lower it or raise the limit, or connections beyond the limit go unanswered"
        );
    }
}
