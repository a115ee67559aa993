//! Discovery records from arbitrary bytes: parsing never panics, a record that parses is exactly the bytes it
//! came from, and whatever facts a DNS packet yields encode and read back the same. The input is also
//! signed with a fixed key as if it were a DNS packet, so the parser behind the signature check is reached.
#![no_main]

use iroh_base::SecretKey;
use iroh_relay::protos::discovery::{NodeRecord, SignedRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedRecord::from_bytes(data) {
        assert_eq!(signed.as_bytes(), data);
        assert_eq!(signed.encoded_len(), data.len());
        let _ = signed.record();
    }

    let key = SecretKey::from_bytes(&[7; 32]);
    let node = key.public();
    if let Ok(record) = NodeRecord::from_dns_packet(node, data) {
        if let Ok(packet) = record.to_dns_packet() {
            assert_eq!(NodeRecord::from_dns_packet(node, &packet), Ok(record.clone()));
            let signed = SignedRecord::sign(&key, &record, 1).expect("a record that encodes signs");
            assert_eq!(signed.record(), Ok(record));
        }
    }

    // The same bytes as the packet of a correctly signed record.
    let mut signable = format!("3:seqi1e1:v{}:", data.len()).into_bytes();
    signable.extend_from_slice(data);
    let signature = key.sign(&signable);
    let mut bytes = node.as_bytes().to_vec();
    bytes.extend_from_slice(signature.as_bytes());
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(data);
    if let Ok(signed) = SignedRecord::from_bytes(&bytes) {
        let _ = signed.record();
    }
});
