//! The disco keys the actor derives, one X25519 key agreement per sender, and the budget that bounds how
//! many it derives for senders it does not know. Sans-IO: fed `now`, the derivation passed in.
//!
//! Anyone can send disco packets naming ever-new (valid) sender keys with garbage inside: each forced a key
//! agreement (about 60 us, six times the cost of dropping a malformed packet) before the packet could be
//! found forged, and every 4,096 senders the cache started over, dropping the keys of the nodes we talk to
//! as well. During such a flood the actor fell behind, pings of a working direct path went unanswered, and
//! transfers fell back to the relay.
//!
//! Now:
//! - a *known* sender (one the path core knows: we dial it, it dialled us, or we have a path to it) always
//!   gets its key, and known keys are never evicted;
//! - a *stranger* gets a key agreement only within a token bucket, [`STRANGER_KEYS_PER_SECOND`] with bursts
//!   of [`STRANGER_KEY_BURST`], one bucket for UDP and one for packets a relay vouches for (the relay checked
//!   the sender's login), so a free UDP flood cannot shut out newcomers arriving through a relay;
//! - past [`MAX_SECRETS`] keys, the strangers' keys are dropped first; if known nodes alone still fill half
//!   the cache (an attacker with real keys can become "known"), it starts over, so the cache stays bounded
//!   and a full one costs one sweep per [`MAX_SECRETS`] / 2 insertions at most.
//!
//! A stranger over budget loses the packet (counted in `SocketStats::disco_over_budget`); a real newcomer
//! retries its pings, and its first contact usually comes through its relay anyway.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use iroh_base::{NodeId, SharedSecret};

use crate::magicsock::metrics::inc;

/// Key agreements per second for senders the path core does not know, per origin (UDP, relayed).
pub(crate) const STRANGER_KEYS_PER_SECOND: u32 = 100;
/// Key agreements a quiet origin may spend at once on strangers.
pub(crate) const STRANGER_KEY_BURST: u32 = 200;
/// The most keys cached; past it, strangers' keys are dropped (and all, if known ones fill half of it).
pub(crate) const MAX_SECRETS: usize = 4096;

/// Micro-tokens per key agreement, so refills are exact integers.
const MICRO: u64 = 1_000_000;

/// Why no key was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRefused {
    /// The sender key is not a valid public key (the derivation failed).
    Invalid,
    /// A stranger, and its origin's budget is spent.
    OverBudget,
}

/// A token bucket of key agreements.
#[derive(Debug, Clone)]
struct Budget {
    level: u64,
    updated: Instant,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Self {
            level: u64::from(STRANGER_KEY_BURST) * MICRO,
            updated: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated);
        if elapsed > Duration::ZERO {
            let refill = u64::try_from(elapsed.as_micros())
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::from(STRANGER_KEYS_PER_SECOND));
            self.level = self
                .level
                .saturating_add(refill)
                .min(u64::from(STRANGER_KEY_BURST) * MICRO);
            self.updated = now;
        }
        if self.level >= MICRO {
            self.level -= MICRO;
            true
        } else {
            false
        }
    }
}

/// The cache of derived keys, generic over the key so tests need no real key agreement.
#[derive(Debug)]
pub(crate) struct DiscoKeys<S> {
    secrets: HashMap<NodeId, S>,
    udp: Budget,
    relayed: Budget,
}

impl<S> DiscoKeys<S> {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            secrets: HashMap::new(),
            udp: Budget::new(now),
            relayed: Budget::new(now),
        }
    }

    /// The key shared with `node`: cached, or derived with `derive` if `node` is known (`is_known`) or its
    /// origin's budget allows. `relayed` says a relay vouched for the sender.
    pub(crate) fn get(
        &mut self,
        now: Instant,
        node: NodeId,
        relayed: bool,
        is_known: impl Fn(&NodeId) -> bool,
        derive: impl FnOnce() -> Option<S>,
    ) -> Result<&S, KeyRefused> {
        if !self.secrets.contains_key(&node) {
            if !is_known(&node) {
                let budget = if relayed {
                    &mut self.relayed
                } else {
                    &mut self.udp
                };
                if !budget.take(now) {
                    return Err(KeyRefused::OverBudget);
                }
            }
            let secret = derive().ok_or(KeyRefused::Invalid)?;
            if self.secrets.len() >= MAX_SECRETS {
                self.secrets.retain(|node, _| is_known(node));
                if self.secrets.len() >= MAX_SECRETS / 2 {
                    self.secrets.clear();
                }
            }
            self.secrets.insert(node, secret);
        }
        self.secrets.get(&node).ok_or(KeyRefused::Invalid)
    }

    /// How many keys are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.secrets.len()
    }
}

impl super::Actor {
    /// The disco key shared with `node`, to send to it: derived once and cached (a node we send to is one we
    /// know).
    pub(super) fn secret(&mut self, node: NodeId) -> Option<&SharedSecret> {
        let (secret_key, sock) = (&self.secret_key, &self.sock);
        self.keys
            .get(
                Instant::now(),
                node,
                false,
                |_| true,
                || {
                    inc(&sock.metrics.disco_keys_derived);
                    secret_key.shared_secret(&node).ok()
                },
            )
            .ok()
    }

    /// The key to open a packet from `sender` (`relayed`: a relay vouched for it), within the strangers'
    /// budget; `None` (counted) if the sender key is invalid or the budget is spent.
    pub(super) fn secret_from(
        &mut self,
        now: Instant,
        sender: NodeId,
        relayed: bool,
    ) -> Option<&SharedSecret> {
        let (secret_key, paths, sock) = (&self.secret_key, &self.paths, &self.sock);
        let secret = self.keys.get(
            now,
            sender,
            relayed,
            |node| paths.knows(node),
            || {
                inc(&sock.metrics.disco_keys_derived);
                secret_key.shared_secret(&sender).ok()
            },
        );
        match secret {
            Ok(secret) => Some(secret),
            Err(KeyRefused::Invalid) => {
                inc(&sock.metrics.disco_invalid);
                None
            }
            Err(KeyRefused::OverBudget) => {
                tracing::trace!(sender = %sender.fmt_short(), "disco packet from a stranger over budget");
                inc(&sock.metrics.disco_over_budget);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use iroh_base::SecretKey;

    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        // Distinct valid keys, cheaply: derived from an index.
        (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                SecretKey::from_bytes(&seed).public()
            })
            .collect()
    }

    #[test]
    fn strangers_are_budgeted_per_origin_and_known_nodes_never() {
        let t0 = Instant::now();
        let mut keys = DiscoKeys::<u64>::new(t0);
        let flood = nodes(1_000);
        let known = nodes(1_001)[1_000];
        let is_known = |n: &NodeId| *n == known;
        let mut derived = 0;
        // A flood of 1,000 strangers over UDP in one instant: the burst, no more.
        for node in &flood {
            if keys.get(t0, *node, false, is_known, || Some(1)).is_ok() {
                derived += 1;
            }
        }
        assert_eq!(derived, STRANGER_KEY_BURST as usize);
        assert_eq!(
            keys.get(t0, flood[999], false, is_known, || Some(1)),
            Err(KeyRefused::OverBudget)
        );
        // The known node is served however spent the budget is, and a relayed stranger has its own.
        assert_eq!(keys.get(t0, known, false, is_known, || Some(7)), Ok(&7));
        assert_eq!(keys.get(t0, flood[999], true, is_known, || Some(2)), Ok(&2));
        // Cached keys cost nothing.
        assert_eq!(
            keys.get(t0, flood[0], false, is_known, || panic!("cached")),
            Ok(&1)
        );
        // The rate: 100 a second.
        let later = t0 + Duration::from_millis(100);
        let refilled = flood[300..400]
            .iter()
            .filter(|n| keys.get(later, **n, false, is_known, || Some(1)).is_ok())
            .count();
        assert_eq!(refilled, 10);
    }

    #[test]
    fn a_flood_over_virtual_seconds_gets_the_rate() {
        let t0 = Instant::now();
        let mut keys = DiscoKeys::<u64>::new(t0);
        let flood = nodes(4_000);
        let mut derived = 0u32;
        // 4,000 strangers over 2 s: 2,000 a second.
        for (i, node) in flood.iter().enumerate() {
            let now = t0 + Duration::from_micros(500 * i as u64);
            if keys.get(now, *node, false, |_| false, || Some(0)).is_ok() {
                derived += 1;
            }
        }
        let most = STRANGER_KEY_BURST + STRANGER_KEYS_PER_SECOND * 2;
        assert!(derived <= most && derived + 2 >= most, "{derived}");
    }

    #[test]
    fn a_full_cache_drops_strangers_not_known_nodes() {
        let t0 = Instant::now();
        let mut keys = DiscoKeys::<u64>::new(t0);
        let all = nodes(MAX_SECRETS + 10);
        let known: std::collections::HashSet<NodeId> = all[..10].iter().copied().collect();
        let is_known = |n: &NodeId| known.contains(n);
        for node in &all[..10] {
            keys.get(t0, *node, false, is_known, || Some(1)).unwrap();
        }
        // Fill with strangers, letting the budget refill between them.
        for (i, node) in all[10..].iter().enumerate() {
            let now = t0 + Duration::from_millis(10 * (i as u64 + 1));
            keys.get(now, *node, false, is_known, || Some(2)).unwrap();
        }
        assert!(keys.len() <= MAX_SECRETS);
        for node in &all[..10] {
            assert_eq!(
                keys.get(t0, *node, false, is_known, || panic!("kept")),
                Ok(&1)
            );
        }
    }

    #[test]
    fn a_cache_full_of_known_nodes_starts_over_and_stays_bounded() {
        let t0 = Instant::now();
        let mut keys = DiscoKeys::<u64>::new(t0);
        let all = nodes(MAX_SECRETS + 1);
        for node in &all {
            keys.get(t0, *node, false, |_| true, || Some(1)).unwrap();
            assert!(keys.len() <= MAX_SECRETS);
        }
        assert_eq!(keys.len(), 1, "started over at the limit");
    }

    #[test]
    fn invalid_keys_are_refused_and_not_cached() {
        let t0 = Instant::now();
        let mut keys = DiscoKeys::<u64>::new(t0);
        let node = nodes(1)[0];
        assert_eq!(
            keys.get(t0, node, false, |_| true, || None),
            Err(KeyRefused::Invalid)
        );
        assert_eq!(keys.len(), 0);
    }
}
