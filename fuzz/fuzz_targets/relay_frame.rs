//! Relay frames from arbitrary bytes: parsing never panics, whatever parses re-encodes to exactly the bytes
//! it came from, and the streaming decoder agrees with the slice parser.
#![no_main]

use bytes::BytesMut;
use iroh_relay::protos::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = Frame::parse(data);
    if let Ok(Some((frame, used))) = &parsed {
        assert_eq!(&frame.to_bytes()[..], &data[..*used]);
        assert_eq!(frame.encoded_len(), *used);
    }
    let mut buf = BytesMut::from(data);
    let decoded = Frame::decode(&mut buf);
    match (parsed, decoded) {
        (Ok(Some((a, used))), Ok(Some(b))) => {
            assert_eq!(a, b);
            assert_eq!(buf.len(), data.len() - used);
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        (a, b) => panic!("parse and decode disagree: {a:?} vs {b:?}"),
    }
});
