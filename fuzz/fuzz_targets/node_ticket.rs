//! Tickets and keys from arbitrary input: parsing never panics, and whatever parses re-encodes to a value
//! that parses back equal.
#![no_main]

use iroh_base::{NodeTicket, PublicKey, Signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ticket) = NodeTicket::from_bytes(data) {
        let again = NodeTicket::from_bytes(&ticket.to_bytes()).expect("re-encoded ticket parses");
        assert_eq!(again, ticket);
        let text = ticket.to_string();
        assert_eq!(text.parse::<NodeTicket>().expect("ticket text parses"), ticket);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ticket) = text.parse::<NodeTicket>() {
            assert_eq!(ticket.to_string().parse::<NodeTicket>().expect("reparses"), ticket);
        }
        if let Ok(key) = text.parse::<PublicKey>() {
            assert_eq!(key.to_string().parse::<PublicKey>().expect("reparses"), key);
        }
        if let Ok(sig) = text.parse::<Signature>() {
            assert_eq!(sig.to_string().parse::<Signature>().expect("reparses"), sig);
        }
    }
});
