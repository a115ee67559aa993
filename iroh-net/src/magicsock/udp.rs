//! The magic socket's real UDP sockets: one IPv4 and (when the system has IPv6) one IPv6 socket, each with
//! large buffers and wrapped by quinn's tokio runtime so that quinn-udp does GSO, GRO and ECN on them.
//!
//! Port prediction adds *extra* IPv4 sockets (see [`crate::paths`]): the hard side of an attempt opens a
//! few hundred ([`UdpSockets::open_extras`]), all received from like the main ones; the one a peer's probe
//! reaches gets a route ([`UdpSockets::route_via`]): everything to that peer address leaves through it
//! from then on, since only its NAT mapping lets the peer's packets in. The rest close.

use std::{
    collections::HashMap,
    fmt, io,
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
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

/// Names one extra socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ExtraId(u64);

/// The extra sockets as one receive pass takes them.
pub(crate) type ExtraSnapshot = Arc<Vec<(ExtraId, Arc<dyn AsyncUdpSocket>)>>;

/// The extra sockets and the routes through them.
#[derive(Default)]
struct Extras {
    socks: Vec<(ExtraId, Arc<Sock>)>,
    /// The same, as receiving wants them: rebuilt on every change, so that a receive pass costs one
    /// reference count, not a list.
    snapshot: ExtraSnapshot,
    /// Remote address -> the socket that reaches it.
    routes: HashMap<SocketAddr, (ExtraId, Arc<Sock>)>,
}

impl Extras {
    fn refresh_snapshot(&mut self) {
        self.snapshot = Arc::new(
            self.socks
                .iter()
                .map(|(id, sock)| (*id, Arc::clone(&sock.io)))
                .collect(),
        );
    }
}

/// The IPv4 socket and the optional IPv6 one, and the extra IPv4 sockets of port prediction.
pub(crate) struct UdpSockets {
    v4: Sock,
    v6: Option<Sock>,
    extras: RwLock<Extras>,
    /// Whether `extras` holds any socket (the hot paths skip its lock when not).
    has_extras: AtomicBool,
    /// Whether `extras` holds any route.
    has_routes: AtomicBool,
    next_extra: AtomicU64,
    /// The waker of the last receive, woken when sockets are added (so that they are polled at once).
    recv_waker: Mutex<Option<Waker>>,
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
        Ok(Self {
            v4,
            v6,
            extras: RwLock::default(),
            has_extras: AtomicBool::new(false),
            has_routes: AtomicBool::new(false),
            next_extra: AtomicU64::new(0),
            recv_waker: Mutex::new(None),
        })
    }

    /// Opens up to `count` extra IPv4 sockets on the main one's IP (any port), with the system's default
    /// buffers, received from from now on. Each holds two descriptors (see [`Sock`]). Stops at the first
    /// that cannot be bound (out of descriptors, typically), returning those opened and that error.
    pub(crate) fn open_extras(&self, count: usize) -> (Vec<ExtraId>, Option<BindError>) {
        let mut opened = Vec::with_capacity(count);
        let mut error = None;
        for _ in 0..count {
            match bind_with(SocketAddr::new(self.v4.local.ip(), 0), None) {
                Ok(sock) => opened.push(sock),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if opened.is_empty() {
            return (Vec::new(), error);
        }
        let mut extras = self.extras.write().unwrap_or_else(PoisonError::into_inner);
        let ids: Vec<ExtraId> = opened
            .into_iter()
            .map(|sock| {
                let id = ExtraId(self.next_extra.fetch_add(1, Ordering::Relaxed));
                extras.socks.push((id, Arc::new(sock)));
                id
            })
            .collect();
        extras.refresh_snapshot();
        self.has_extras.store(true, Ordering::Release);
        drop(extras);
        self.wake_receiver();
        (ids, error)
    }

    /// Sends one datagram from extra socket `id`.
    pub(crate) fn send_extra(
        &self,
        id: ExtraId,
        dst: SocketAddr,
        contents: &[u8],
    ) -> io::Result<()> {
        let extras = self.extras.read().unwrap_or_else(PoisonError::into_inner);
        let (_, sock) = extras
            .socks
            .iter()
            .find(|(i, _)| *i == id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such extra socket"))?;
        sock.side.send_to(contents, dst).map(|_| ())
    }

    /// From now on, everything to `remote` leaves through extra socket `id` (whose buffers grow to the
    /// main sockets' size, as it may carry a connection). Returns whether `id` exists.
    pub(crate) fn route_via(&self, id: ExtraId, remote: SocketAddr) -> bool {
        let mut extras = self.extras.write().unwrap_or_else(PoisonError::into_inner);
        let Some((_, sock)) = extras.socks.iter().find(|(i, _)| *i == id) else {
            return false;
        };
        let sock = Arc::clone(sock);
        let socket = socket2::SockRef::from(&sock.side);
        socket.set_recv_buffer_size(SOCKET_BUFFER_SIZE).ok();
        socket.set_send_buffer_size(SOCKET_BUFFER_SIZE).ok();
        extras.routes.insert(remote, (id, sock));
        self.has_routes.store(true, Ordering::Release);
        true
    }

    /// Closes the extra sockets `ids` and drops the routes through them.
    pub(crate) fn close_extras(&self, ids: &[ExtraId]) {
        let mut extras = self.extras.write().unwrap_or_else(PoisonError::into_inner);
        extras.socks.retain(|(id, _)| !ids.contains(id));
        extras.routes.retain(|_, (id, _)| !ids.contains(id));
        extras.refresh_snapshot();
        self.has_extras
            .store(!extras.socks.is_empty(), Ordering::Release);
        self.has_routes
            .store(!extras.routes.is_empty(), Ordering::Release);
    }

    /// How many extra sockets are open.
    pub(crate) fn extra_count(&self) -> usize {
        if !self.has_extras.load(Ordering::Acquire) {
            return 0;
        }
        self.extras
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .socks
            .len()
    }

    /// The extra socket that reaches `remote`, if one has a route to it.
    fn route(&self, remote: &SocketAddr) -> Option<Arc<Sock>> {
        if !self.has_routes.load(Ordering::Acquire) {
            return None;
        }
        let extras = self.extras.read().unwrap_or_else(PoisonError::into_inner);
        extras.routes.get(remote).map(|(_, sock)| Arc::clone(sock))
    }

    /// The extra sockets as they are now, for one pass of receiving.
    pub(crate) fn extras_snapshot(&self) -> Option<ExtraSnapshot> {
        if !self.has_extras.load(Ordering::Acquire) {
            return None;
        }
        let extras = self.extras.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&extras.snapshot))
    }

    /// Remembers the receiving task's waker, so that opening extra sockets can wake it.
    pub(crate) fn note_recv_waker(&self, waker: &Waker) {
        let mut slot = self
            .recv_waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn wake_receiver(&self) {
        let waker = self
            .recv_waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(waker) = waker {
            waker.wake();
        }
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
    ///
    /// To an address with a route through an extra socket, it goes through that one; a full buffer there
    /// is [`io::ErrorKind::Other`] (the datagram is dropped: quinn's write readiness covers only the main
    /// sockets, so it must not wait for this one).
    pub(crate) fn send(&self, dst: SocketAddr, transmit: &Transmit<'_>) -> io::Result<()> {
        let dst = SocketAddr::new(dst.ip().to_canonical(), dst.port());
        if let Some(extra) = self.route(&dst) {
            let sent = extra.io.try_send(&Transmit {
                destination: dst,
                ecn: transmit.ecn,
                contents: transmit.contents,
                segment_size: transmit.segment_size,
                src_ip: None,
            });
            return match sent {
                // tokio has not seen the socket writable since (it was just opened, or was full):
                // plain sends, one per segment, which fail only when the kernel's buffer is full.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let stride = transmit
                        .segment_size
                        .unwrap_or(transmit.contents.len())
                        .max(1);
                    transmit
                        .contents
                        .chunks(stride)
                        .try_for_each(|segment| extra.side.send_to(segment, dst).map(|_| ()))
                        .map_err(|e| {
                            if e.kind() == io::ErrorKind::WouldBlock {
                                io::Error::other("extra socket buffer full")
                            } else {
                                e
                            }
                        })
                }
                other => other,
            };
        }
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
        if let Some(extra) = self.route(&dst) {
            return extra.side.send_to(contents, dst).map(|_| ());
        }
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
    let sock = bind_with(addr, Some(SOCKET_BUFFER_SIZE))?;
    debug!(
        local = %sock.local,
        requested = SOCKET_BUFFER_SIZE,
        recv_buffer = sock.buffers.0,
        send_buffer = sock.buffers.1,
        gso_segments = sock.io.max_transmit_segments(),
        gro_segments = sock.io.max_receive_segments(),
        "UDP socket bound"
    );
    Ok(sock)
}

/// Binds a socket on `addr`, asking for `buffers` bytes each way (the system's default with `None`).
fn bind_with(addr: SocketAddr, buffers: Option<usize>) -> Result<Sock, BindError> {
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
    if let Some(size) = buffers {
        if let Err(error) = socket.set_recv_buffer_size(size) {
            debug!(%addr, %error, "cannot set the receive buffer size");
        }
        if let Err(error) = socket.set_send_buffer_size(size) {
            debug!(%addr, %error, "cannot set the send buffer size");
        }
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
    Ok(Sock {
        io,
        side,
        local,
        buffers,
    })
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::Duration};

    use super::*;

    fn recv_from(peer: &std::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 64];
        let (n, from) = peer
            .recv_from(&mut buf)
            .expect("a datagram within the timeout");
        (buf[..n].to_vec(), from)
    }

    #[tokio::test]
    async fn an_extra_socket_carries_what_is_routed_through_it() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let udp = UdpSockets::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), None).unwrap();
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let peer_addr = peer.local_addr().unwrap();
            assert!(udp.extras_snapshot().is_none());

            let (ids, error) = udp.open_extras(1);
            assert!(error.is_none());
            let id = ids[0];
            assert_eq!(udp.extra_count(), 1);
            udp.send_extra(id, peer_addr, b"probe").unwrap();
            let (data, extra_addr) = recv_from(&peer);
            assert_eq!(data, b"probe");
            assert_ne!(extra_addr, udp.local_v4());
            assert_eq!(extra_addr.ip(), udp.local_v4().ip());
            let snapshot = udp.extras_snapshot().unwrap();
            assert_eq!(snapshot.len(), 1);
            assert_eq!(snapshot[0].0, id);

            // No route yet: the main socket sends.
            udp.send_datagram(peer_addr, b"main").unwrap();
            assert_eq!(recv_from(&peer).1, udp.local_v4());

            // Routed: disco and QUIC to that address leave through the extra socket.
            assert!(udp.route_via(id, peer_addr));
            udp.send_datagram(peer_addr, b"disco").unwrap();
            assert_eq!(recv_from(&peer), (b"disco".to_vec(), extra_addr));
            let transmit = Transmit {
                destination: peer_addr,
                ecn: None,
                contents: b"quic",
                segment_size: None,
                src_ip: None,
            };
            udp.send(peer_addr, &transmit).unwrap();
            assert_eq!(recv_from(&peer), (b"quic".to_vec(), extra_addr));
            // Other addresses still use the main socket.
            let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            other
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            udp.send_datagram(other.local_addr().unwrap(), b"x")
                .unwrap();
            assert_eq!(recv_from(&other).1, udp.local_v4());

            // Closed: the route goes with it.
            udp.close_extras(&[id]);
            assert_eq!(udp.extra_count(), 0);
            assert!(udp.extras_snapshot().is_none());
            assert!(!udp.route_via(id, peer_addr));
            udp.send_datagram(peer_addr, b"main again").unwrap();
            assert_eq!(recv_from(&peer).1, udp.local_v4());
            assert!(udp.send_extra(id, peer_addr, b"gone").is_err());
        })
        .await
        .expect("test timed out");
    }
}
