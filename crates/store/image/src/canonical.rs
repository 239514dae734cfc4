//! Canonical JSON: object keys sorted bytewise at every level and no insignificant
//! whitespace, so equal content always yields equal bytes (and equal digests).
//!
//! The workspace turns on serde_json's `preserve_order`, so `serde_json::Map` keeps
//! insertion order; this module sorts explicitly instead of relying on the map type.

use serde::Serialize;
use serde_json::Value;

/// Why a value could not be turned into canonical JSON.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialize to canonical JSON: {0}")]
pub struct CanonicalJsonError(#[from] serde_json::Error);

/// Serializes `value` to canonical JSON bytes (sorted keys, compact).
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalJsonError> {
    let mut tree = serde_json::to_value(value)?;
    tree.sort_all_objects();
    Ok(serde_json::to_vec(&tree)?)
}

/// Returns `value` with the keys of every object (recursively) in sorted order (sorted in
/// place: no map is built again).
pub fn canonicalize_value(mut value: Value) -> Value {
    value.sort_all_objects();
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, json};

    #[test]
    fn sorts_nested_keys_and_is_compact() {
        let mut inner = Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!([{"y": 1, "b": 2}]));
        let mut outer = Map::new();
        outer.insert("m".into(), Value::Object(inner));
        outer.insert("B".into(), json!(null));
        let bytes = canonical_json(&Value::Object(outer)).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"B":null,"m":{"a":[{"b":2,"y":1}],"z":1}}"#
        );
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z\\u{e9}\"\\\\]{0,6}".prop_map(Value::String),
        ]
    }

    fn tree() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z_.]{0,5}", inner, 0..6)
                    .prop_map(|m| { Value::Object(m.into_iter().collect()) }),
            ]
        })
    }

    /// Rebuilds every object with its entries inserted in a permuted order.
    fn reorder(value: &Value, seed: u64) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.reverse();
                if !entries.is_empty() {
                    let len = entries.len();
                    let shift = usize::try_from(seed % len as u64).unwrap();
                    entries.rotate_left(shift);
                }
                let mut out = Map::new();
                for (key, child) in entries {
                    out.insert(
                        key.clone(),
                        reorder(child, seed.wrapping_mul(31).wrapping_add(7)),
                    );
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| reorder(v, seed)).collect()),
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn canonical_bytes_do_not_depend_on_insertion_order(value in tree(), seed in any::<u64>()) {
            let shuffled = reorder(&value, seed);
            prop_assert_eq!(canonical_json(&value).unwrap(), canonical_json(&shuffled).unwrap());
            // Canonical output parses back to the same value.
            let bytes = canonical_json(&shuffled).unwrap();
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(back, value);
        }
    }
}
