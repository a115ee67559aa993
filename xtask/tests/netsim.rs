//! `cargo xtask netsim --self-test` as a test: builds a simulated internet with one site of every NAT kind and
//! checks NAT behaviour, the link shaper and the fault machinery (see `src/netsim/selftest.rs`).
//!
//! Needs root and a built relay, so it is ignored by default:
//!
//! ```text
//! cargo build -p iroh-relay && sudo -E cargo test -p xtask --test netsim -- --ignored
//! ```

use std::{path::Path, process::Command};

#[test]
#[ignore = "needs root and a built iroh-relay: cargo test -p xtask --test netsim -- --ignored"]
fn netsim_self_test_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let relay = target.join("debug").join("iroh-relay");
    assert!(
        relay.is_file(),
        "build the relay first: cargo build -p iroh-relay (looked for {})",
        relay.display()
    );
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["netsim", "--self-test", "--relay-bin"])
        .arg(&relay)
        .status()
        .expect("runs xtask");
    assert!(
        status.success(),
        "the netsim self-test failed; see its output above"
    );
}
