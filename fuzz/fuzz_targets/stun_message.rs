//! Fuzzes the STUN codec: `Message::parse` must never panic, and whatever it accepts must be STUN by `is_stun`,
//! re-encode to the same length, re-parse to the same message, and encode stably.
//!
//! Run with `cargo +nightly fuzz run stun_message` from the repository root.

#![no_main]

use iroh_stun::{Message, is_stun, peek_transaction_id};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert!(is_stun(data), "parse accepted what is_stun rejects");
    assert_eq!(peek_transaction_id(data), Some(msg.transaction_id()));

    let first = msg.to_bytes();
    assert_eq!(first.len(), msg.encoded_len());
    // Only padding bytes may differ, so the length is kept.
    assert_eq!(first.len(), data.len());

    let reparsed = Message::parse(&first).expect("our own encoding must parse");
    assert_eq!(reparsed, msg);
    assert_eq!(reparsed.to_bytes(), first);
});
