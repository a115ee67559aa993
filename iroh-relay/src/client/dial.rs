//! Reaching an `http`/`https` URL: DNS (IP literals and `localhost` need none), TCP with Happy Eyeballs,
//! then TLS for `https`. Shared by the relay connection and the discovery client.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use hickory_resolver::TokioResolver;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tracing::debug;
use url::{Host, Url};

use super::{BoxError, ConnectError, tls};

/// How long a TCP attempt runs alone before the next one starts beside it (RFC 8305's "Connection Attempt
/// Delay", which recommends 250 ms).
const TCP_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Opens byte streams to URLs, reusing one TLS configuration and one DNS resolver.
#[derive(Debug, Clone)]
pub(crate) struct Dialer {
    extra_roots: Vec<CertificateDer<'static>>,
    insecure_skip_cert_verify: bool,
    dns_resolver: OnceLock<TokioResolver>,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

impl Dialer {
    pub(crate) fn new(
        extra_roots: Vec<CertificateDer<'static>>,
        insecure_skip_cert_verify: bool,
        dns_resolver: Option<TokioResolver>,
    ) -> Self {
        let resolver = OnceLock::new();
        if let Some(given) = dns_resolver {
            resolver.set(given).ok();
        }
        Self {
            extra_roots,
            insecure_skip_cert_verify,
            dns_resolver: resolver,
            tls: OnceLock::new(),
        }
    }

    /// TCP (and TLS for `https`) to the URL's host and port, unbounded in time: callers bound it.
    pub(crate) async fn dial(&self, url: &Url) -> Result<HttpStream, ConnectError> {
        let host = url.host().ok_or_else(|| ConnectError::Dns {
            host: String::new(),
            source: "the URL has no host".into(),
        })?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = self.resolve(&host, port).await?;
        let tcp = connect_tcp(&addrs).await?;
        if url.scheme() != "https" {
            return Ok(HttpStream::Plain(tcp));
        }
        let config = match self.tls.get() {
            Some(config) => config.clone(),
            None => {
                let config = tls::client_config(&self.extra_roots, self.insecure_skip_cert_verify)
                    .map_err(|e| ConnectError::Tls(io::Error::other(e)))?;
                self.tls.get_or_init(|| config).clone()
            }
        };
        let name = server_name(&host)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        Ok(HttpStream::Tls(Box::new(tls)))
    }

    async fn resolve(&self, host: &Host<&str>, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        let name = match *host {
            Host::Ipv4(ip) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
            Host::Ipv6(ip) => return Ok(vec![SocketAddr::new(ip.into(), port)]),
            Host::Domain(name) => name,
        };
        if is_localhost(name) {
            return Ok(vec![
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            ]);
        }
        let dns_error = |source: BoxError| ConnectError::Dns {
            host: name.to_owned(),
            source,
        };
        let resolver = match self.dns_resolver.get() {
            Some(resolver) => resolver.clone(),
            None => {
                let resolver = system_resolver().map_err(dns_error)?;
                self.dns_resolver.get_or_init(|| resolver).clone()
            }
        };
        let lookup = resolver
            .lookup_ip(name)
            .await
            .map_err(|e| dns_error(Box::new(e)))?;
        let addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(dns_error("no addresses".into()));
        }
        debug!(host = name, ?addrs, "resolved host");
        Ok(addrs)
    }
}

/// `localhost` and its subdomains always mean this machine (RFC 6761, section 6.3): no DNS query.
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// A resolver from the system configuration, or, where there is none (containers without
/// `/etc/resolv.conf`), one that asks Cloudflare's public servers.
fn system_resolver() -> Result<TokioResolver, BoxError> {
    match TokioResolver::builder_tokio() {
        Ok(builder) => Ok(builder.build()?),
        Err(error) => {
            debug!(%error, "no system DNS configuration, using public resolvers");
            let config = hickory_resolver::config::ResolverConfig::udp_and_tcp(
                &hickory_resolver::config::CLOUDFLARE,
            );
            Ok(TokioResolver::builder_with_config(config, Default::default()).build()?)
        }
    }
}

/// Connects to the first of `addrs` that answers, Happy Eyeballs style (RFC 8305 section 5): the addresses
/// are tried in order, a new attempt every [`TCP_ATTEMPT_DELAY`] (or at once when the running ones have
/// failed) while earlier ones keep running; the first to connect wins and the others are dropped. After
/// the last address comes one more attempt to the first: a lost SYN costs TCP a one-second retransmission
/// timeout, where a second SYN a quarter of a second later usually gets through (Chrome's "backup connect
/// job" does the same).
async fn connect_tcp(addrs: &[SocketAddr]) -> Result<TcpStream, ConnectError> {
    let plan: Vec<SocketAddr> = addrs.iter().chain(addrs.first()).copied().collect();
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut last_error = None;
    loop {
        if attempts.is_empty() {
            let Some(&addr) = plan.get(next) else {
                break;
            };
            next += 1;
            attempts.spawn(async move { (addr, TcpStream::connect(addr).await) });
        }
        let more = next < plan.len();
        let done = tokio::select! {
            done = attempts.join_next() => done,
            () = tokio::time::sleep(TCP_ATTEMPT_DELAY), if more => {
                let addr = plan[next];
                next += 1;
                attempts.spawn(async move { (addr, TcpStream::connect(addr).await) });
                continue;
            }
        };
        match done {
            Some(Ok((_, Ok(stream)))) => {
                // Frames are coalesced by the writer; Nagle would only add latency.
                stream.set_nodelay(true).ok();
                return Ok(stream);
            }
            Some(Ok((addr, Err(source)))) => {
                debug!(%addr, %source, "TCP connect failed");
                last_error = Some(ConnectError::Tcp { addr, source });
            }
            // A panicked or cancelled attempt: nothing to report but that it failed.
            Some(Err(_)) | None => {}
        }
    }
    Err(last_error.unwrap_or_else(|| ConnectError::Dns {
        host: String::new(),
        source: "no addresses".into(),
    }))
}

fn server_name(host: &Host<&str>) -> Result<ServerName<'static>, ConnectError> {
    match *host {
        Host::Ipv4(ip) => Ok(ServerName::IpAddress(IpAddr::V4(ip).into())),
        Host::Ipv6(ip) => Ok(ServerName::IpAddress(IpAddr::V6(ip).into())),
        Host::Domain(name) => ServerName::try_from(name.to_owned())
            .map_err(|e| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e))),
    }
}

/// The byte stream to an HTTP server: TCP, or TLS over TCP.
#[derive(Debug)]
pub(crate) enum HttpStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names_never_reach_dns() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("LOCALHOST."));
        assert!(is_localhost("relay.localhost"));
        assert!(!is_localhost("localhost.example.org"));
        assert!(!is_localhost("notlocalhost"));
    }

    #[tokio::test]
    async fn ip_literals_and_localhost_resolve_without_a_resolver() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let connector = Dialer::new(Vec::new(), false, None);
            let v4 = connector
                .resolve(&Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)), 80)
                .await;
            assert_eq!(v4.unwrap(), vec!["192.0.2.1:80".parse().unwrap()]);
            let v6 = connector
                .resolve(&Host::Ipv6(Ipv6Addr::LOCALHOST), 443)
                .await;
            assert_eq!(v6.unwrap(), vec!["[::1]:443".parse().unwrap()]);
            let local = connector.resolve(&Host::Domain("localhost"), 3340).await;
            assert_eq!(
                local.unwrap(),
                vec![
                    "127.0.0.1:3340".parse().unwrap(),
                    "[::1]:3340".parse().unwrap()
                ]
            );
            assert!(
                connector.dns_resolver.get().is_none(),
                "no resolver was built"
            );
        })
        .await
        .unwrap();
    }
}
