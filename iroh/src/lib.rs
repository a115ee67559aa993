//! Dial any node by its public key and get a direct, encrypted QUIC connection.
//!
//! This is the facade crate applications depend on. It is not built yet; it will re-export what an
//! application needs from `iroh-base` and `iroh-net` (the `Endpoint` and its builder, `Connection`,
//! `NodeId`, `NodeAddr`, `SecretKey`, `RelayUrl`, `NodeTicket`, watchers and errors) and add a `Router`
//! that dispatches incoming connections to protocol handlers by ALPN.
//!
//! Today the keys and addresses are available from [`iroh_base`], re-exported here.
#![forbid(unsafe_code)]

pub use iroh_base;
pub use iroh_base::{NodeAddr, NodeId, NodeTicket, PublicKey, RelayUrl, SecretKey, Signature};
