//! One HTTP/1.1 keep-alive connection, used by one task for sequential requests.
//!
//! hyper's low-level client is used directly: no pool, no DNS, no per-request lookups.
//! The connection future is polled inside `send` together with the request instead of in a
//! task of its own, so a request costs no cross-task wake-ups.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::ErrorKind;
use crate::target::Target;

/// A request ready to send; every field is reference-counted, so cloning one to send it
/// again copies no bytes.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub uri: Uri,
    pub authorization: Option<HeaderValue>,
    /// JSON, or empty for no body.
    pub body: Bytes,
}

impl Req {
    /// A request to `path`, which must be an origin-form path built by this crate.
    pub fn new(
        method: Method,
        path: String,
        authorization: Option<HeaderValue>,
        body: Bytes,
    ) -> Req {
        let uri = Uri::try_from(path).expect("paths built from validated ids are valid URIs");
        Req {
            method,
            uri,
            authorization,
            body,
        }
    }
}

pub fn header_value(value: String) -> HeaderValue {
    HeaderValue::try_from(value).expect("header values built from validated ids are valid")
}

type Io = TokioIo<TcpStream>;
type Body = Full<Bytes>;

pub struct Conn {
    sender: http1::SendRequest<Body>,
    /// `None` once the server has closed its side: the connection must be replaced.
    driver: Option<Pin<Box<http1::Connection<Io, Body>>>>,
    host: HeaderValue,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Conn {
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Conn, ErrorKind> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| ErrorKind::Connect)?
            .map_err(|_| ErrorKind::Connect)?;
        // Requests are small and sent one at a time: Nagle would only add delay.
        stream.set_nodelay(true).map_err(|_| ErrorKind::Connect)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ErrorKind::Connect)?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
            host: target.host_header.clone(),
        })
    }

    /// False once the connection can no longer be used.
    pub fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Sends `req` and reads the whole response; returns its status.
    pub async fn send(&mut self, req: &Req, timeout: Duration) -> Result<u16, ErrorKind> {
        if !self.is_open() {
            // Without its driver nothing would ever answer; the caller should reconnect.
            return Err(ErrorKind::Closed);
        }
        let mut request = Request::new(Full::new(req.body.clone()));
        *request.method_mut() = req.method.clone();
        *request.uri_mut() = req.uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        if !req.body.is_empty() {
            headers.insert(CONTENT_TYPE, JSON);
        }
        if let Some(auth) = &req.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }

        let sender = &mut self.sender;
        let exchange = async move {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            // Drain frame by frame rather than collecting: the body is not needed.
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<u16, hyper::Error>(status)
        };
        let outcome = tokio::time::timeout(timeout, drive(&mut self.driver, exchange)).await;
        let result = match outcome {
            Err(_) => Err(ErrorKind::Timeout),
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(classify(&e)),
        };
        if result.is_err() {
            // Whatever state the exchange was left in, this connection cannot carry
            // another request.
            self.driver = None;
        }
        result
    }
}

/// Runs `exchange` while also polling the connection that carries it. If the connection
/// finishes first (the server closed it), the exchange is still polled to completion: it
/// then either has its response already or fails with a closed-connection error.
async fn drive<F: Future>(
    driver: &mut Option<Pin<Box<http1::Connection<Io, Body>>>>,
    exchange: F,
) -> F::Output {
    let mut exchange = std::pin::pin!(exchange);
    if let Some(conn) = driver.as_mut() {
        tokio::select! {
            biased;
            out = &mut exchange => return out,
            _ = conn => *driver = None,
        }
    }
    exchange.await
}

fn classify(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_closed() || e.is_canceled() || e.is_incomplete_message() || was_reset(e) {
        ErrorKind::Closed
    } else {
        ErrorKind::Protocol
    }
}

/// Whether `e`, or an error behind it, is a connection reset. To a player a reset (e.g.
/// by a node killed mid-request) is the node closing the connection, but hyper reports it
/// as a plain I/O error when the request was on the wire.
fn was_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that drops the connection after reading a request, with a reset (as a
    /// killed process does) or an orderly close: either way the request counts as closed,
    /// not as a malformed answer, and the connection must be replaced. (Here hyper wraps
    /// the reset as a cancelled request; see `resets_are_recognised` for the bare form.)
    #[tokio::test]
    async fn a_reset_or_closed_connection_counts_as_closed() {
        for reset in [true, false] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let node = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                stream.readable().await.unwrap();
                let _ = stream.try_read(&mut [0u8; 4096]);
                if reset {
                    stream.set_zero_linger().unwrap();
                }
            });
            let target = crate::target::parse(&format!("http://{addr}")).unwrap();
            let timeout = Duration::from_secs(5);
            let mut conn = Conn::connect(&target, timeout).await.unwrap();
            let req = Req::new(Method::GET, "/".into(), None, Bytes::new());
            assert_eq!(
                conn.send(&req, timeout).await,
                Err(ErrorKind::Closed),
                "reset: {reset}"
            );
            assert!(!conn.is_open());
            node.await.unwrap();
        }
    }

    #[test]
    fn resets_are_recognised() {
        use std::io::{Error, ErrorKind as Io};
        for kind in [Io::ConnectionReset, Io::ConnectionAborted, Io::BrokenPipe] {
            assert!(was_reset(&Error::from(kind)), "{kind:?}");
        }
        assert!(!was_reset(&Error::from(Io::InvalidData)));
    }
}
