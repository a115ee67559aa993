//! Giving memory back to the system once load has fallen (with glibc's allocator).
//!
//! glibc keeps memory freed in the middle of its heaps for reuse, and returns only what is free at a heap's
//! very top. After 1,000 TLS connections that never logged in had closed, the relay stayed at 5.3 times its
//! idle RSS for good. `malloc_trim(0)` hands every free page back (since glibc 2.8 also those inside the
//! heaps): 1.5 times idle. It takes a few milliseconds on a heap of 50 MiB and holds the allocator's locks
//! meanwhile, so it runs only when load has fallen: when at least [`TRIM_AFTER_ENDED`] connections (logged
//! in or not) have gone since the last trim, checked every [`CHECK_INTERVAL`].
//!
//! The one `unsafe` block of the binary is the call into glibc: there is no safe wrapper for it, and a
//! replacement allocator (jemalloc, mimalloc) either kept the memory as long or took 12 s and a background
//! thread to return it, for a minute of build time.
#![allow(unsafe_code)]

use std::time::Duration;

use iroh_relay::server::Server;
use tracing::debug;

/// How often the number of connections is looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How many connections must have ended since the last trim (the most there were, minus now) for the next.
const TRIM_AFTER_ENDED: usize = 128;

/// Trims after load falls, until dropped. Never returns.
pub(crate) async fn run(server: &Server) {
    let mut interval = tokio::time::interval(CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0;
    loop {
        interval.tick().await;
        let now = server.num_pending() + server.num_clients();
        peak = peak.max(now);
        if peak - now >= TRIM_AFTER_ENDED {
            let started = std::time::Instant::now();
            // Off the runtime's workers: it takes milliseconds under the allocator's locks.
            let returned = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            debug!(
                ended = peak - now,
                returned,
                took_us = started.elapsed().as_micros(),
                "gave freed memory back to the system"
            );
            peak = now;
        }
    }
}

/// Returns free memory to the system; whether anything was returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: `malloc_trim` has no preconditions: it takes the allocator's locks itself, may be called from
    // any thread at any time, and only releases pages that hold no allocation.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl's) return memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
