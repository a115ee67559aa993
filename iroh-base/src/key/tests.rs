use proptest::prelude::*;

use super::*;

fn secret(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

/// 32 bytes that are not a valid compressed Edwards point: y = 2 has no square root for x.
fn invalid_point_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[0] = 2;
    bytes
}

#[test]
fn invalid_point_is_really_invalid() {
    assert!(VerifyingKey::from_bytes(&invalid_point_bytes()).is_err());
}

#[test]
fn rfc8032_test_vector_1() {
    // RFC 8032 section 7.1, TEST 1: the empty message.
    let mut secret_bytes = [0u8; 32];
    HEX.decode_mut(
        b"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        &mut secret_bytes,
    )
    .unwrap();
    let key = SecretKey::from_bytes(&secret_bytes);
    assert_eq!(
        HEX.encode(key.public().as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let signature = key.sign(b"");
    assert_eq!(
        signature.to_string(),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
         5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    key.public().verify(b"", &signature).unwrap();
}

#[test]
fn public_key_text_forms() {
    let key = secret(1).public();
    let text = key.to_string();
    assert_eq!(text.len(), ZBASE32_KEY_CHARS);
    assert_eq!(text.parse::<PublicKey>().unwrap(), key);
    assert_eq!(text.to_uppercase().parse::<PublicKey>().unwrap(), key);
    let hex = HEX.encode(key.as_bytes());
    assert_eq!(hex.parse::<PublicKey>().unwrap(), key);
    assert_eq!(hex.to_uppercase().parse::<PublicKey>().unwrap(), key);
    assert_eq!(key.fmt_short(), text[..SHORT_CHARS]);
    assert_eq!(format!("{key:?}"), format!("PublicKey({text})"));
}

#[test]
fn public_key_parse_errors() {
    assert!(matches!(
        "".parse::<PublicKey>(),
        Err(KeyParsingError::WrongLength { len: 0, .. })
    ));
    assert!(matches!(
        "abc".parse::<PublicKey>(),
        Err(KeyParsingError::WrongLength { len: 3, .. })
    ));
    // Right length, bad character ('l' and 'v' are not z-base-32; 'g' is not hex).
    let mut text = secret(1).public().to_string();
    text.replace_range(5..6, "l");
    assert_eq!(
        text.parse::<PublicKey>(),
        Err(KeyParsingError::InvalidCharacter { position: 5 })
    );
    let mut hex = HEX.encode(secret(1).public().as_bytes());
    hex.replace_range(63..64, "g");
    assert!(matches!(
        hex.parse::<PublicKey>(),
        Err(KeyParsingError::InvalidCharacter { .. })
    ));
    // Non-zero unused bits in the last z-base-32 character: not a canonical encoding.
    let mut text = secret(1).public().to_string();
    text.replace_range(51..52, "9");
    assert!(matches!(
        text.parse::<PublicKey>(),
        Err(KeyParsingError::InvalidCharacter { position: 51 })
    ));
    // A multi-byte character must not panic on slicing.
    let weird = "é".repeat(26);
    assert_eq!(weird.len(), 52);
    assert!(weird.parse::<PublicKey>().is_err());
    // Valid encoding of bytes that are no curve point.
    let bad = HEX.encode(&invalid_point_bytes());
    assert_eq!(bad.parse::<PublicKey>(), Err(KeyParsingError::InvalidKey));
    assert_eq!(
        PublicKey::from_bytes(&invalid_point_bytes()),
        Err(KeyParsingError::InvalidKey)
    );
    assert!(matches!(
        PublicKey::try_from_slice(&[0u8; 31]),
        Err(KeyParsingError::WrongLength { len: 31, .. })
    ));
}

#[test]
fn signatures_verify_only_for_their_key_and_message() {
    let (a, b) = (secret(1), secret(2));
    let sig = a.sign(b"message");
    a.public().verify(b"message", &sig).unwrap();
    assert_eq!(a.public().verify(b"messagf", &sig), Err(SignatureError));
    assert_eq!(b.public().verify(b"message", &sig), Err(SignatureError));
    let mut bytes = sig.to_bytes();
    bytes[10] ^= 1;
    assert_eq!(
        a.public()
            .verify(b"message", &Signature::from_bytes(&bytes)),
        Err(SignatureError)
    );
}

#[test]
fn signature_text_and_errors() {
    let sig = secret(3).sign(b"x");
    let text = sig.to_string();
    assert_eq!(text.len(), 128);
    assert_eq!(text.parse::<Signature>().unwrap(), sig);
    assert!(matches!(
        text[..127].parse::<Signature>(),
        Err(KeyParsingError::WrongLength { len: 127, .. })
    ));
    let mut bad = text.clone();
    bad.replace_range(0..1, "z");
    assert_eq!(
        bad.parse::<Signature>(),
        Err(KeyParsingError::InvalidCharacter { position: 0 })
    );
    assert!(Signature::try_from_slice(&[0; 63]).is_err());
    assert_eq!(Signature::try_from_slice(&sig.to_bytes()).unwrap(), sig);
}

#[test]
fn secret_key_never_debug_prints() {
    let key = secret(9);
    assert_eq!(format!("{key:?}"), "SecretKey(..)");
    assert_eq!(key.to_string().parse::<SecretKey>().unwrap(), key);
    assert_ne!(SecretKey::generate(), SecretKey::generate());
}

#[test]
fn serde_forms() {
    let key = secret(4);
    let public = key.public();
    let sig = key.sign(b"m");

    // Human-readable: strings.
    assert_eq!(
        serde_json::to_string(&public).unwrap(),
        format!("\"{public}\"")
    );
    assert_eq!(serde_json::to_string(&sig).unwrap(), format!("\"{sig}\""));
    assert_eq!(serde_json::to_string(&key).unwrap(), format!("\"{key}\""));
    assert_eq!(
        serde_json::from_str::<PublicKey>(&format!("\"{public}\"")).unwrap(),
        public
    );
    assert!(serde_json::from_str::<PublicKey>("\"abc\"").is_err());

    // Binary: exactly the raw bytes, no length prefix.
    let bytes = postcard::to_stdvec(&public).unwrap();
    assert_eq!(bytes, public.as_bytes());
    assert_eq!(postcard::from_bytes::<PublicKey>(&bytes).unwrap(), public);
    let bytes = postcard::to_stdvec(&sig).unwrap();
    assert_eq!(bytes, sig.as_bytes());
    assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), sig);
    let bytes = postcard::to_stdvec(&key).unwrap();
    assert_eq!(bytes, key.to_bytes());
    assert_eq!(postcard::from_bytes::<SecretKey>(&bytes).unwrap(), key);

    // Binary input that is no curve point, or too short, is an error.
    assert!(postcard::from_bytes::<PublicKey>(&invalid_point_bytes()).is_err());
    assert!(postcard::from_bytes::<PublicKey>(&[1u8; 31]).is_err());
}

proptest! {
    #[test]
    fn public_key_round_trips(seed in any::<[u8; 32]>()) {
        let key = SecretKey::from_bytes(&seed).public();
        prop_assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
        prop_assert_eq!(HEX.encode(key.as_bytes()).parse::<PublicKey>().unwrap(), key);
        prop_assert_eq!(PublicKey::from_bytes(key.as_bytes()).unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        prop_assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        let bin = postcard::to_stdvec(&key).unwrap();
        prop_assert_eq!(postcard::from_bytes::<PublicKey>(&bin).unwrap(), key);
    }

    #[test]
    fn secret_key_and_signature_round_trip(seed in any::<[u8; 32]>(), msg in proptest::collection::vec(any::<u8>(), 0..64)) {
        let key = SecretKey::from_bytes(&seed);
        prop_assert_eq!(key.to_string().parse::<SecretKey>().unwrap(), key.clone());
        let sig = key.sign(&msg);
        prop_assert_eq!(sig.to_string().parse::<Signature>().unwrap(), sig);
        prop_assert!(key.public().verify(&msg, &sig).is_ok());
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(s in ".{0,80}") {
        let _ = s.parse::<PublicKey>();
        let _ = s.parse::<SecretKey>();
        let _ = s.parse::<Signature>();
    }

    #[test]
    fn arbitrary_bytes_are_accepted_exactly_when_they_decompress(bytes in any::<[u8; 32]>()) {
        let ours = PublicKey::from_bytes(&bytes).is_ok();
        let dalek = VerifyingKey::from_bytes(&bytes).is_ok();
        prop_assert_eq!(ours, dalek);
    }
}
