//! Where load may go: a URL whose host is a loopback address.
//!
//! This machine's policy is to send load only to itself. A `LoopbackUrl` can only be
//! built from a URL naming 127.0.0.0/8, `::1` or `localhost`, and connections go to the
//! address checked here, never to a name resolved later, so nothing else can be reached.

use anyhow::{Context, Result, bail, ensure};
use hyper::Uri;
use hyper::header::HeaderValue;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// An `http://` URL on this machine: the socket address to connect to, and how to name it.
#[derive(Debug, Clone)]
pub struct LoopbackUrl {
    addr: SocketAddr,
    authority: String,
    base_path: String,
}

impl LoopbackUrl {
    /// Parses `http://host[:port][/base]`, refusing any host that is not loopback.
    pub fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("{url}: only http:// is supported, not {other}://"),
            None => bail!("{url}: expected http://host:port"),
        }
        ensure!(
            uri.query().is_none(),
            "{url}: a base URL takes no query string"
        );
        let authority = uri.authority().with_context(|| format!("{url}: no host"))?;
        ensure!(
            !authority.as_str().contains('@'),
            "{url}: a base URL takes no user info"
        );
        let ip = loopback_ip(authority.host())?;
        Ok(Self {
            addr: SocketAddr::new(ip, authority.port_u16().unwrap_or(80)),
            authority: authority.as_str().to_owned(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The checked address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value of the `Host` header, as the URL named it.
    pub fn host_header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.authority)
            .expect("a parsed URI authority is a valid header value")
    }

    /// The origin-form URI of `path` (starting with `/`) below the base path.
    pub fn uri_for(&self, path: &str) -> Result<Uri> {
        let full = format!("{}{path}", self.base_path);
        full.parse()
            .with_context(|| format!("{full:?} is not a valid request path"))
    }

    /// The gRPC endpoint: the checked address itself (any base path is ignored).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The address named by `host` if it is loopback; `localhost` is 127.0.0.1 and never looked up.
fn loopback_ip(host: &str) -> Result<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let refuse = || {
        format!(
            "{host} is not a loopback address: loadgen sends load only to 127.0.0.0/8, ::1 or localhost \
             (this machine's policy)"
        )
    };
    let ip: IpAddr = literal.parse().with_context(refuse)?;
    ensure!(ip.to_canonical().is_loopback(), refuse());
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_accepted() {
        for (url, addr) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://127.1.2.3:9", "127.1.2.3:9"),
            ("http://localhost:50051", "127.0.0.1:50051"),
            ("http://LOCALHOST", "127.0.0.1:80"),
            ("http://[::1]:8080/", "[::1]:8080"),
            ("http://[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:8080"),
        ] {
            let target = LoopbackUrl::parse(url).unwrap();
            assert_eq!(target.addr().to_string(), addr, "{url}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:8080",
            "http://0.0.0.0:8080",
            "http://example.com",
            "http://localhost.example.com",
            "http://[::]:8080",
            "http://[2001:db8::1]:80",
            "http://user@127.0.0.1:8080",
        ] {
            assert!(LoopbackUrl::parse(url).is_err(), "{url} was accepted");
        }
    }

    #[test]
    fn only_plain_http_is_supported() {
        assert!(LoopbackUrl::parse("https://127.0.0.1:8443").is_err());
        assert!(LoopbackUrl::parse("127.0.0.1:8080").is_err());
    }

    #[test]
    fn request_paths_go_below_the_base_path() {
        let target = LoopbackUrl::parse("http://127.0.0.1:8080/chat/").unwrap();
        assert_eq!(target.uri_for("/api/auth/me").unwrap(), "/chat/api/auth/me");
        assert_eq!(target.host_header(), "127.0.0.1:8080");
    }
}
