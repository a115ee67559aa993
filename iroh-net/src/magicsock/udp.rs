//! The magic socket's real UDP sockets: one IPv4 and (when the system has IPv6) one IPv6 socket, each with
//! large buffers and wrapped by quinn's tokio runtime so that quinn-udp does GSO, GRO and ECN on them.

use std::{
    fmt, io,
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use quinn::{
    AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller,
    udp::{RecvMeta, Transmit},
};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

/// The socket buffer size asked for, in each direction. The kernel caps it (on Linux at
/// `net.core.rmem_max` / `wmem_max`, and reports twice the value it keeps); what it granted is logged and
/// shown by [`UdpSockets::buffer_sizes`].
pub(crate) const SOCKET_BUFFER_SIZE: usize = 7 * 1024 * 1024;

/// Why the UDP sockets could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The fixed port asked for is taken by another socket.
    #[error("cannot bind {addr}: the address is in use")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The socket could not be created or bound for another reason.
    #[error("cannot bind {addr}: {source}")]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The TLS configuration for the QUIC endpoint could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// quinn refused the socket.
    #[error("QUIC endpoint: {0}")]
    Quic(#[source] io::Error),
}

/// One bound socket.
struct Sock {
    io: Arc<dyn AsyncUdpSocket>,
    /// The same socket (a duplicated descriptor), for the actor's single datagrams. Sending through `io`
    /// outside quinn's poll-writable-then-send cycle fails with `WouldBlock` until tokio's reactor has
    /// seen the socket writable once (right after binding, under load); a plain non-blocking `send_to`
    /// fails only when the buffer is really full.
    side: std::net::UdpSocket,
    local: SocketAddr,
    /// The receive and send buffer sizes the kernel granted.
    buffers: (usize, usize),
}

/// The IPv4 socket and the optional IPv6 one.
pub(crate) struct UdpSockets {
    v4: Sock,
    v6: Option<Sock>,
}

impl fmt::Debug for UdpSockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSockets")
            .field("v4", &self.v4.local)
            .field("v6", &self.v6.as_ref().map(|s| s.local))
            .finish()
    }
}

impl UdpSockets {
    /// Binds the IPv4 socket on `v4` and, if given, the IPv6 one on `v6` (IPv6-only, so that both may use the
    /// same port).
    ///
    /// A port that is taken is an error ([`BindError::AddrInUse`]). If the system has no IPv6 at all (the
    /// socket cannot be created, or the address is not available), the endpoint runs on IPv4 alone: that is
    /// logged, not an error.
    pub(crate) fn bind(v4: SocketAddrV4, v6: Option<SocketAddrV6>) -> Result<Self, BindError> {
        let v4 = bind_one(SocketAddr::V4(v4))?;
        let v6 = match v6 {
            None => None,
            Some(addr) => match bind_one(SocketAddr::V6(addr)) {
                Ok(sock) => Some(sock),
                Err(BindError::Socket { addr, source }) if ipv6_missing(&source) => {
                    debug!(%addr, %source, "no IPv6 on this system: running on IPv4 alone");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        Ok(Self { v4, v6 })
    }

    /// The local address of the IPv4 socket.
    pub(crate) fn local_v4(&self) -> SocketAddr {
        self.v4.local
    }

    /// The local address of the IPv6 socket, if there is one.
    pub(crate) fn local_v6(&self) -> Option<SocketAddr> {
        self.v6.as_ref().map(|s| s.local)
    }

    /// The (receive, send) buffer sizes granted, IPv4 socket first.
    pub(crate) fn buffer_sizes(&self) -> Vec<(SocketAddr, usize, usize)> {
        self.all()
            .map(|s| (s.local, s.buffers.0, s.buffers.1))
            .collect()
    }

    fn all(&self) -> impl Iterator<Item = &Sock> {
        std::iter::once(&self.v4).chain(self.v6.as_ref())
    }

    /// Receives from socket `index` (0: IPv4, 1: IPv6) through quinn-udp (GRO batches); `None` when there is
    /// no such socket.
    pub(crate) fn poll_recv(
        &self,
        index: usize,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Option<Poll<io::Result<usize>>> {
        let sock = match index {
            0 => &self.v4,
            1 => self.v6.as_ref()?,
            _ => return None,
        };
        Some(sock.io.poll_recv(cx, bufs, meta))
    }

    /// Sends `transmit`'s contents (one datagram or a GSO batch) to `dst` on the socket of its family.
    /// `Err(WouldBlock)` when that socket's buffer is full; any other error is the system's.
    pub(crate) fn send(&self, dst: SocketAddr, transmit: &Transmit<'_>) -> io::Result<()> {
        let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
        let sock = match dst {
            SocketAddr::V4(_) => &self.v4,
            SocketAddr::V6(_) => self
                .v6
                .as_ref()
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no IPv6 socket"))?,
        };
        sock.io.try_send(&Transmit {
            destination: dst,
            ecn: transmit.ecn,
            contents: transmit.contents,
            segment_size: transmit.segment_size,
            // The source IP quinn learned from a received packet may belong to the other family or to a
            // path we no longer use: let the kernel choose it.
            src_ip: None,
        })
    }

    /// Sends one datagram to `dst` (disco and STUN) with a plain non-blocking `send_to`.
    pub(crate) fn send_datagram(&self, dst: SocketAddr, contents: &[u8]) -> io::Result<()> {
        let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
        let sock = match dst {
            SocketAddr::V4(_) => &self.v4,
            SocketAddr::V6(_) => self
                .v6
                .as_ref()
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no IPv6 socket"))?,
        };
        sock.side.send_to(contents, dst).map(|_| ())
    }

    /// A poller that is ready when every socket is writable.
    pub(crate) fn poller(&self) -> Poller {
        Poller {
            pollers: self
                .all()
                .map(|s| Arc::clone(&s.io).create_io_poller())
                .collect(),
        }
    }

    /// The most datagrams one transmit may carry: the least of the sockets' GSO limits.
    pub(crate) fn max_transmit_segments(&self) -> usize {
        self.all()
            .map(|s| s.io.max_transmit_segments())
            .min()
            .unwrap_or(1)
    }

    /// The most datagrams one receive may return per buffer: the most of the sockets' GRO limits.
    pub(crate) fn max_receive_segments(&self) -> usize {
        self.all()
            .map(|s| s.io.max_receive_segments())
            .max()
            .unwrap_or(1)
    }

    /// Whether datagrams may be fragmented on some socket.
    pub(crate) fn may_fragment(&self) -> bool {
        self.all().any(|s| s.io.may_fragment())
    }
}

/// Write readiness of all sockets, for quinn's [`UdpPoller`].
///
/// Ready only when every socket is writable: a transmit may go to either, and a poller that said "ready"
/// while the socket a packet needs is full would make quinn retry in a busy loop.
pub(crate) struct Poller {
    pollers: Vec<Pin<Box<dyn UdpPoller>>>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("sockets", &self.pollers.len())
            .finish()
    }
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut ready = true;
        for poller in &mut this.pollers {
            match poller.as_mut().poll_writable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => ready = false,
            }
        }
        if ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// Whether a socket error means the system has no usable IPv6.
fn ipv6_missing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
    ) || matches!(
        error.raw_os_error(),
        // EAFNOSUPPORT and EADDRNOTAVAIL on Linux, the BSDs and macOS.
        Some(97 | 99 | 47 | 49)
    )
}

fn bind_one(addr: SocketAddr) -> Result<Sock, BindError> {
    let fail = |source: io::Error| {
        if source.kind() == io::ErrorKind::AddrInUse {
            BindError::AddrInUse { addr }
        } else {
            BindError::Socket { addr, source }
        }
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    // Ask for large buffers before binding; the kernel grants what its limits allow.
    if let Err(error) = socket.set_recv_buffer_size(SOCKET_BUFFER_SIZE) {
        debug!(%addr, %error, "cannot set the receive buffer size");
    }
    if let Err(error) = socket.set_send_buffer_size(SOCKET_BUFFER_SIZE) {
        debug!(%addr, %error, "cannot set the send buffer size");
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    let buffers = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    let std_socket: std::net::UdpSocket = socket.into();
    let local = std_socket.local_addr().map_err(fail)?;
    let side = std_socket.try_clone().map_err(fail)?;
    let io = TokioRuntime.wrap_udp_socket(std_socket).map_err(fail)?;
    debug!(
        %local,
        requested = SOCKET_BUFFER_SIZE,
        recv_buffer = buffers.0,
        send_buffer = buffers.1,
        gso_segments = io.max_transmit_segments(),
        gro_segments = io.max_receive_segments(),
        "UDP socket bound"
    );
    Ok(Sock {
        io,
        side,
        local,
        buffers,
    })
}
