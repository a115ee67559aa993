//! Mapped addresses: the made-up IPv6 socket address by which quinn knows each remote node.
//!
//! quinn addresses its peers by socket address, but a node's real path changes (relay, then a direct
//! address, then another after a network change). So quinn is given one stable, made-up address per node
//! and never sees a real one; the magic socket translates on every send and receive.
//!
//! # Address layout
//!
//! A unique local IPv6 address (RFC 4193), which no real peer of ours can have:
//!
//! ```text
//! | fd (8 bits) | global id (40 bits) | subnet id (16 bits) | interface id (64 bits) |   port 12345
//!   L=1 local     random per process    one per table          1, 2, 3, ... per node
//! ```
//!
//! "Global ID: 40-bit global identifier used to create a globally unique prefix" (RFC 4193 section 3.1),
//! generated randomly once per process (section 3.2). Each [`MappedAddrs`] table takes the next subnet id,
//! so two tables in one process (two endpoints) never hand out the same address; within a table, nodes are
//! numbered in the order first seen. The port is fixed.
//!
//! # Concurrency
//!
//! Lookups run on quinn's hot path (every transmit and every received packet), inserts only when a node is
//! first met. The table is a `std::sync::RwLock` around two maps: reads take the shared lock for a hash
//! lookup and never wait on each other; no lock is ever held across an `.await` (all methods are sync and
//! short). Entries are never removed, so an address stays valid as long as quinn may use it. Entries are
//! created by the caller for nodes it chose to talk to or heard from authentically; bounding that set is
//! the caller's policy.

use std::{
    collections::HashMap,
    net::{Ipv6Addr, SocketAddr, SocketAddrV6},
    sync::{
        OnceLock, PoisonError, RwLock,
        atomic::{AtomicU16, Ordering},
    },
};

use iroh_base::NodeId;

/// The port of every mapped address.
pub const MAPPED_PORT: u16 = 12345;

/// The unique-local prefix `fc00::/7` with the L bit set: `fd00::/8`.
const ULA_LOCAL: u8 = 0xfd;

/// The per-process random global id.
static GLOBAL_ID: OnceLock<[u8; 5]> = OnceLock::new();
/// The subnet id of the next table made with [`MappedAddrs::new`].
static NEXT_SUBNET: AtomicU16 = AtomicU16::new(0);

/// The two-way table between NodeIds and their mapped addresses.
#[derive(Debug)]
pub struct MappedAddrs {
    /// The first 8 bytes of every address of this table: `fd`, global id, subnet id.
    prefix: [u8; 8],
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Index `i` holds the node whose interface id is `i + 1`.
    nodes: Vec<NodeId>,
    by_node: HashMap<NodeId, u64>,
}

impl MappedAddrs {
    /// A table under this process's random global id and the next free subnet id.
    pub fn new() -> Self {
        Self {
            prefix: next_prefix(),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// A table with a given global id and subnet id, for deterministic tests.
    pub fn with_prefix(global_id: [u8; 5], subnet_id: u16) -> Self {
        Self {
            prefix: make_prefix(global_id, subnet_id),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The mapped address of `node`, giving it the next one if it has none yet.
    pub fn get_or_insert(&self, node: NodeId) -> SocketAddr {
        if let Some(addr) = self.get(&node) {
            return addr;
        }
        // Poisoning: see `read`.
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have inserted it between our read and write locks.
        let id = match inner.by_node.get(&node) {
            Some(id) => *id,
            None => {
                inner.nodes.push(node);
                let id = inner.nodes.len() as u64;
                inner.by_node.insert(node, id);
                id
            }
        };
        self.addr(id)
    }

    /// The mapped address of `node`, if it has one.
    pub fn get(&self, node: &NodeId) -> Option<SocketAddr> {
        let id = *self.read().by_node.get(node)?;
        Some(self.addr(id))
    }

    /// The node whose mapped address is `addr`, if any. The IPv6 flow label and scope id are ignored.
    pub fn node_for(&self, addr: &SocketAddr) -> Option<NodeId> {
        let id = self.interface_id(addr)?;
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.read().nodes.get(index).copied()
    }

    /// Whether `addr` is in this table's address range (prefix and port), without a lock. Such an address
    /// never belongs to a real peer; [`MappedAddrs::node_for`] says whether a node has it.
    pub fn is_mapped(&self, addr: &SocketAddr) -> bool {
        self.interface_id(addr).is_some()
    }

    /// How many nodes have an address.
    pub fn len(&self) -> usize {
        self.read().nodes.len()
    }

    /// Whether no node has an address yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn addr(&self, id: u64) -> SocketAddr {
        addr_in(&self.prefix, id)
    }

    /// The interface id of an address in this table's range.
    fn interface_id(&self, addr: &SocketAddr) -> Option<u64> {
        interface_id_in(&self.prefix, addr)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the write lock (only an allocation failure could cause one) leaves at worst a
        // node in `nodes` but not in `by_node`; it would later get a second id, and both map back to it. So a
        // poisoned lock is still sound to use.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The address prefix of a new table: `fd`, this process's random global id, the next subnet id. Shared
/// with the other made-up address tables of the crate (the magic socket's aliases of unknown sources), so
/// that no two tables in a process overlap.
pub(crate) fn next_prefix() -> [u8; 8] {
    let global_id = *GLOBAL_ID.get_or_init(rand::random);
    make_prefix(global_id, NEXT_SUBNET.fetch_add(1, Ordering::Relaxed))
}

fn make_prefix(global_id: [u8; 5], subnet_id: u16) -> [u8; 8] {
    let mut prefix = [0u8; 8];
    prefix[0] = ULA_LOCAL;
    prefix[1..6].copy_from_slice(&global_id);
    prefix[6..].copy_from_slice(&subnet_id.to_be_bytes());
    prefix
}

/// The address with interface id `id` under `prefix`, at [`MAPPED_PORT`].
pub(crate) fn addr_in(prefix: &[u8; 8], id: u64) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets[..8].copy_from_slice(prefix);
    octets[8..].copy_from_slice(&id.to_be_bytes());
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), MAPPED_PORT, 0, 0))
}

/// The interface id of `addr` if it lies under `prefix` at [`MAPPED_PORT`].
pub(crate) fn interface_id_in(prefix: &[u8; 8], addr: &SocketAddr) -> Option<u64> {
    let SocketAddr::V6(addr) = addr else {
        return None;
    };
    if addr.port() != MAPPED_PORT {
        return None;
    }
    let octets = addr.ip().octets();
    let (head, id) = octets.split_at(8);
    if head != prefix {
        return None;
    }
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

impl Default for MappedAddrs {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
