//! Disco plaintexts from arbitrary bytes: parsing never panics; whatever parses re-encodes to exactly
//! `encoded_len` bytes that parse to the same message; a current-version plaintext re-encodes to exactly the
//! bytes it came from, a newer one to its prefix. The sealed layer around it is checked too: `sender` never panics on any packet.
//!
//! Run with `cargo +nightly fuzz run disco_packet` from the repository root.

#![no_main]

use iroh_net::disco::{self, Message, VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The packet layer's unauthenticated part must cope with anything.
    let _ = disco::sender(data);
    let _ = disco::looks_like_disco(data);

    let Ok(msg) = Message::parse_plaintext(data) else {
        return;
    };
    let encoded = msg.to_plaintext();
    assert_eq!(encoded.len(), msg.encoded_len());
    assert!(encoded.len() <= disco::MAX_PLAINTEXT_LEN);
    if data[1] == VERSION {
        assert_eq!(
            encoded, data,
            "a current-version plaintext must re-encode exactly"
        );
    } else if data[1] > VERSION {
        // A newer version's trailing fields are dropped; what is kept is our encoding of the prefix.
        assert_eq!(encoded[0], data[0]);
        assert_eq!(encoded[2..], data[2..encoded.len()]);
    } else {
        // An older version is re-encoded as the current one (a version-1 call-me-maybe gains flags 0).
        assert_eq!(encoded[0], data[0]);
    }
    assert_eq!(Message::parse_plaintext(&encoded), Ok(msg));
});
