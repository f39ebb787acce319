//! Where the load goes. Only this machine may be loaded: every target must name a loopback
//! address, and is resolved here without DNS so that a name cannot point anywhere else.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderValue;
use http::uri::{Scheme, Uri};

/// A validated base URL: a loopback socket address and the `Host` header to send to it.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as the user wrote it, for reports.
    pub url: String,
    pub addr: SocketAddr,
    pub host_header: HeaderValue,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TargetError {
    NotAUrl(String),
    Scheme(String),
    NoHost,
    NotLoopback(String),
    HasPath(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::NotAUrl(why) => {
                write!(f, "not a URL ({why}); expected e.g. http://127.0.0.1:8080")
            }
            TargetError::Scheme(scheme) => write!(
                f,
                "scheme {scheme:?} is not supported; only plain http:// targets can be loaded"
            ),
            TargetError::NoHost => f.write_str("the URL has no host"),
            TargetError::NotLoopback(host) => write!(
                f,
                "refusing to load {host}: this tool only loads the local machine \
                 (127.0.0.0/8, localhost or [::1])"
            ),
            TargetError::HasPath(path) => write!(
                f,
                "the URL must be a bare base URL without path or query, found {path:?}"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// Parses a base URL and refuses any host that is not a loopback address.
pub fn parse(raw: &str) -> Result<Target, TargetError> {
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| TargetError::NotAUrl(e.to_string()))?;
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => {}
        Some(scheme) => return Err(TargetError::Scheme(scheme.to_string())),
        None => return Err(TargetError::NotAUrl("no scheme".into())),
    }
    if let Some(pq) = uri.path_and_query()
        && (pq.as_str() != "/" && !pq.as_str().is_empty())
    {
        return Err(TargetError::HasPath(pq.as_str().to_owned()));
    }
    let authority = uri.authority().ok_or(TargetError::NoHost)?;
    if authority.as_str().contains('@') {
        return Err(TargetError::NotAUrl("credentials in URL".into()));
    }
    let host = authority.host();
    let ip = loopback_ip(host)?;
    let port = authority.port_u16().unwrap_or(80);
    let addr = SocketAddr::new(ip, port);
    let host_header = HeaderValue::from_str(authority.as_str())
        .map_err(|e| TargetError::NotAUrl(e.to_string()))?;
    Ok(Target {
        url: raw.trim().trim_end_matches('/').to_owned(),
        addr,
        host_header,
    })
}

/// The loopback IP a host names, or why it is refused. `localhost` is mapped here rather
/// than resolved, so an odd resolver configuration cannot send load elsewhere.
fn loopback_ip(host: &str) -> Result<IpAddr, TargetError> {
    if host.is_empty() {
        return Err(TargetError::NoHost);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let refused = || TargetError::NotLoopback(host.to_owned());
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let v6: Ipv6Addr = inner.parse().map_err(|_| refused())?;
        return match v6.to_ipv4_mapped() {
            Some(v4) if v4.is_loopback() => Ok(IpAddr::V4(v4)),
            _ if v6.is_loopback() => Ok(IpAddr::V6(v6)),
            _ => Err(refused()),
        };
    }
    // Only the dotted-quad form: "127.1" and friends are valid to some resolvers but are
    // not worth the ambiguity.
    let v4: Ipv4Addr = host.parse().map_err(|_| refused())?;
    if v4.is_loopback() {
        Ok(IpAddr::V4(v4))
    } else {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        let t = parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:8080");

        let t = parse("http://127.3.4.5:9/").unwrap();
        assert_eq!(t.addr, "127.3.4.5:9".parse().unwrap());
        assert_eq!(t.url, "http://127.3.4.5:9");

        let t = parse("http://localhost:1234").unwrap();
        assert_eq!(t.addr, "127.0.0.1:1234".parse().unwrap());
        assert_eq!(t.host_header, "localhost:1234");

        let t = parse("http://LOCALHOST").unwrap();
        assert_eq!(t.addr.port(), 80);

        let t = parse("http://[::1]:8080").unwrap();
        assert_eq!(t.addr, "[::1]:8080".parse().unwrap());

        let t = parse("http://[::ffff:127.0.0.1]:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn other_hosts_are_refused() {
        for raw in [
            "http://10.0.0.1:8080",
            "http://192.168.1.1",
            "http://172.16.0.1:80",
            "http://8.8.8.8",
            "http://0.0.0.0:8080",
            "http://example.com",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "http://[::2]:80",
            "http://[::ffff:10.0.0.1]:80",
            "http://[fe80::1]:80",
        ] {
            match parse(raw) {
                Err(TargetError::NotLoopback(_)) => {}
                other => panic!("{raw}: expected refusal, got {other:?}"),
            }
        }
        let message = parse("http://10.0.0.1:8080").unwrap_err().to_string();
        assert!(message.contains("refusing to load 10.0.0.1"), "{message}");
    }

    #[test]
    fn malformed_targets_are_errors() {
        assert!(matches!(
            parse("https://127.0.0.1"),
            Err(TargetError::Scheme(_))
        ));
        assert!(parse("127.0.0.1:80").is_err());
        assert!(matches!(parse("not a url"), Err(TargetError::NotAUrl(_))));
        assert!(matches!(
            parse("http://127.0.0.1:80/v1"),
            Err(TargetError::HasPath(_))
        ));
        assert!(parse("http://user@127.0.0.1:80").is_err());
    }
}
