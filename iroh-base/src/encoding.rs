//! Text encodings shared by the key and ticket types, and serde helpers for fixed-size byte arrays.

use std::{fmt, marker::PhantomData, sync::LazyLock};

use data_encoding::{Encoding, Specification};

/// The z-base-32 alphabet (<https://philzimmermann.com/docs/human-oriented-base-32-encoding.txt>), chosen
/// so that the characters people confuse least come up most often. Decoding also accepts upper case.
pub(crate) static Z_BASE_32: LazyLock<Encoding> =
    LazyLock::new(|| build_lowercase_encoding("ybndrfg8ejkmcpqxot1uwisza345h769"));

/// RFC 4648 base32 in lower case without padding, for tickets. Decoding also accepts upper case.
pub(crate) static BASE32_LOWER: LazyLock<Encoding> =
    LazyLock::new(|| build_lowercase_encoding("abcdefghijklmnopqrstuvwxyz234567"));

/// Lower-case hex; decoding accepts both cases.
pub(crate) use data_encoding::HEXLOWER_PERMISSIVE as HEX;

/// A 32-symbol encoding without padding that also decodes the upper-case form of its letters.
fn build_lowercase_encoding(symbols: &str) -> Encoding {
    let mut spec = Specification::new();
    spec.symbols.push_str(symbols);
    let letters: String = symbols.chars().filter(char::is_ascii_lowercase).collect();
    spec.translate.from = letters.to_ascii_uppercase();
    spec.translate.to = letters;
    match spec.encoding() {
        Ok(encoding) => encoding,
        // The specification is a constant of this module; the unit tests build both encodings.
        Err(err) => panic!("invalid base32 specification: {err}"),
    }
}

/// Serializes a fixed-size byte array as a tuple, so binary formats write exactly `N` bytes with no length.
pub(crate) fn serialize_array<S: serde::Serializer, const N: usize>(
    bytes: &[u8; N],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    let mut tuple = serializer.serialize_tuple(N)?;
    for byte in bytes {
        tuple.serialize_element(byte)?;
    }
    tuple.end()
}

/// Reads what [`serialize_array`] wrote.
pub(crate) fn deserialize_array<'de, D: serde::Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    struct ArrayVisitor<const N: usize>(PhantomData<[u8; N]>);

    impl<'de, const N: usize> serde::de::Visitor<'de> for ArrayVisitor<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<[u8; N], E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }
    }

    deserializer.deserialize_tuple(N, ArrayVisitor(PhantomData))
}

/// Deserializes a human-readable value from its string form through `FromStr`.
pub(crate) fn deserialize_from_str<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    struct StrVisitor<T>(PhantomData<T>);

    impl<T> serde::de::Visitor<'_> for StrVisitor<T>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }

    deserializer.deserialize_str(StrVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_build_and_accept_upper_case() {
        let bytes = [0xde, 0xad, 0xbe, 0xef, 0x01];
        for encoding in [&*Z_BASE_32, &*BASE32_LOWER] {
            let text = encoding.encode(&bytes);
            assert_eq!(text, text.to_ascii_lowercase());
            assert_eq!(encoding.decode(text.as_bytes()).unwrap(), bytes);
            assert_eq!(
                encoding
                    .decode(text.to_ascii_uppercase().as_bytes())
                    .unwrap(),
                bytes
            );
        }
    }

    #[test]
    fn z_base_32_matches_the_specification_example() {
        // The specification's worked example: 0xd47a04 (24 bits) encodes as "4t7ye".
        assert_eq!(Z_BASE_32.encode(&[0xd4, 0x7a, 0x04]), "4t7ye");
    }
}
