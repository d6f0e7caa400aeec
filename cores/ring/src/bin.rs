//! Byte strings through serde as *bytes*, not as sequences of `u8`.
//!
//! A `Vec<u8>` derives `Serialize` as a sequence, so postcard writes it one element at a time
//! (and JSON as an array of numbers). postcard writes a sequence of `u8` as its length (varint)
//! and the raw bytes — exactly what it writes for `serialize_bytes` — so bytes through
//! `serde_bytes` give the same encoding byte for byte, at `memcpy` speed instead of a call per
//! byte (property-tested against the derived encoding). Values on the ring (a 1,000-member
//! sorted set is ~20 KB) go through them on every write. `serde_bytes` covers single byte
//! strings (`Bytes`, `ByteBuf`, `#[serde(with = "serde_bytes")]`); this module adds the maps
//! keyed by byte strings that the kv system's hashes and sorted sets are.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
pub use serde_bytes::{ByteBuf, Bytes};

/// `#[serde(with = "basalt_ring::bin::keyed")]` for a `BTreeMap<Vec<u8>, V>` field.
pub mod keyed {
    use super::*;

    pub fn serialize<V: Serialize, S: Serializer>(m: &BTreeMap<Vec<u8>, V>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(Bytes::new(k), v)?;
        }
        map.end()
    }

    struct MapVisitor<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
        type Value = BTreeMap<Vec<u8>, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map keyed by byte strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = access.next_entry::<ByteBuf, V>()? {
                out.insert(k.into_vec(), v);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Vec<u8>, V>, D::Error> {
        d.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// `#[serde(with = "basalt_ring::bin::values")]` for a `BTreeMap<Vec<u8>, Vec<u8>>` field.
pub mod values {
    use super::*;

    pub fn serialize<S: Serializer>(m: &BTreeMap<Vec<u8>, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(Bytes::new(k), Bytes::new(v))?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, D::Error> {
        let m: BTreeMap<Vec<u8>, ByteBuf> = keyed::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        a: Vec<u8>,
        m: BTreeMap<Vec<u8>, f64>,
        h: BTreeMap<Vec<u8>, Vec<u8>>,
        o: Option<Vec<u8>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast {
        #[serde(with = "serde_bytes")]
        a: Vec<u8>,
        #[serde(with = "keyed")]
        m: BTreeMap<Vec<u8>, f64>,
        #[serde(with = "values")]
        h: BTreeMap<Vec<u8>, Vec<u8>>,
        o: Option<ByteBuf>,
    }

    proptest! {
        /// The fast encoding is postcard's derived one, byte for byte, both ways.
        #[test]
        fn same_bytes_as_the_derived_encoding(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            m in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..20), -1e9f64..1e9, 0..20),
            h in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..200), 0..10),
            o in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        ) {
            let plain = Plain { a: a.clone(), m: m.clone(), h: h.clone(), o: o.clone() };
            let fast = Fast { a, m, h, o: o.map(ByteBuf::from) };
            let pb = postcard::to_allocvec(&plain).unwrap();
            let fb = postcard::to_allocvec(&fast).unwrap();
            prop_assert_eq!(&pb, &fb);
            prop_assert_eq!(postcard::from_bytes::<Fast>(&pb).unwrap(), fast);
            let back: Plain = postcard::from_bytes(&fb).unwrap();
            prop_assert_eq!(back, plain);
        }
    }
}
