//! The lists `{online.<key>}` reads: for each socket-data key a namespace's rules read that way,
//! how many of the namespace's sockets hold each value. Sockets are counted from the moment they
//! are indexed in the namespace until they leave it, and each `set_data` moves its socket's
//! count from the old value to the new, so a rule gets the list in time proportional to the
//! distinct values, not to the number of sockets.
//!
//! Values are told apart, and listed in order, by their JSON text with object keys sorted (so
//! two objects that differ only in key order are one value); `null` is never listed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::{Map, Value};

#[derive(Default)]
pub(crate) struct OnlineIndex {
    /// key -> JSON text of a value -> the value and how many sockets hold it.
    keys: Mutex<HashMap<String, BTreeMap<String, Counted>>>,
    /// Some key is counted: read on every connect and disconnect, without the lock.
    any: AtomicBool,
}

struct Counted {
    value: Value,
    sockets: usize,
}

fn listed(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

/// The distinct values among `values`, in the order [`OnlineIndex::values`] lists them (for a
/// key that is not counted).
pub(crate) fn distinct(values: impl Iterator<Item = Option<Value>>) -> Vec<Value> {
    let mut distinct = BTreeMap::new();
    for value in values.flatten().filter(|value| !value.is_null()) {
        distinct.entry(identity(&value)).or_insert(value);
    }
    distinct.into_values().collect()
}

/// The JSON text of `value` with every object's keys in order: what tells values apart.
fn identity(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut fields: Vec<_> = map.iter().collect();
                fields.sort_unstable_by_key(|(key, _)| *key);
                out.push('{');
                for (index, (key, field)) in fields.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(field, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

impl OnlineIndex {
    /// Counts `key` from now on. Only before sockets are counted (see
    /// `Namespace::track_online`, which refuses it later).
    pub(crate) fn track(&self, key: &str) {
        self.keys.lock().entry(key.to_owned()).or_default();
        self.any.store(true, Ordering::Release);
    }

    pub(crate) fn tracks(&self, key: &str) -> bool {
        self.keys.lock().contains_key(key)
    }

    pub(crate) fn tracks_any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// A socket with `data` enters the namespace (`entering`) or leaves it.
    pub(crate) fn count_socket(&self, data: &Map<String, Value>, entering: bool) {
        let mut keys = self.keys.lock();
        for (key, counts) in keys.iter_mut() {
            if let Some(value) = listed(data.get(key)) {
                if entering {
                    Self::count(counts, value);
                } else {
                    Self::uncount(counts, value);
                }
            }
        }
    }

    /// A counted socket's `key` changes from `old` to `new`.
    pub(crate) fn change(&self, key: &str, old: Option<&Value>, new: &Value) {
        let mut keys = self.keys.lock();
        let Some(counts) = keys.get_mut(key) else {
            return;
        };
        if let Some(old) = listed(old) {
            Self::uncount(counts, old);
        }
        if let Some(new) = listed(Some(new)) {
            Self::count(counts, new);
        }
    }

    fn count(counts: &mut BTreeMap<String, Counted>, value: &Value) {
        counts
            .entry(identity(value))
            .or_insert_with(|| Counted {
                value: value.clone(),
                sockets: 0,
            })
            .sockets += 1;
    }

    fn uncount(counts: &mut BTreeMap<String, Counted>, value: &Value) {
        let text = identity(value);
        if let Some(counted) = counts.get_mut(&text) {
            counted.sockets -= 1;
            if counted.sockets == 0 {
                counts.remove(&text);
            }
        }
    }

    /// The distinct values of `key`, in the order of their JSON text; with `replacing`, as if
    /// one counted socket's value were `new` instead of `old` (what a rule being run has set so
    /// far). None when `key` is not counted.
    pub(crate) fn values(
        &self,
        key: &str,
        replacing: Option<(Option<&Value>, Option<&Value>)>,
    ) -> Option<Vec<Value>> {
        let keys = self.keys.lock();
        let counts = keys.get(key)?;
        let (old, new) = match replacing {
            Some((old, new)) if listed(old) != listed(new) => (
                listed(old).map(identity),
                listed(new).map(|value| (identity(value), value)),
            ),
            _ => (None, None),
        };
        let mut values: Vec<(&str, &Value)> = counts
            .iter()
            .filter(|(text, counted)| counted.sockets > 1 || old.as_deref() != Some(text.as_str()))
            .map(|(text, counted)| (text.as_str(), &counted.value))
            .collect();
        if let Some((text, value)) = &new
            && let Err(at) = values.binary_search_by(|(listed, _)| (*listed).cmp(text.as_str()))
        {
            values.insert(at, (text.as_str(), *value));
        }
        Some(values.into_iter().map(|(_, value)| value.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn counts_each_value_once_per_socket_and_forgets_it_with_the_last_one() {
        let index = OnlineIndex::default();
        index.track("user");
        index.count_socket(&data(json!({"user": "bob"})), true);
        index.count_socket(&data(json!({"user": "ann"})), true);
        index.count_socket(&data(json!({"user": "bob"})), true);
        index.count_socket(&data(json!({"user": null, "room": "x"})), true);
        assert_eq!(
            index.values("user", None),
            Some(vec![json!("ann"), json!("bob")])
        );
        index.count_socket(&data(json!({"user": "bob"})), false);
        assert_eq!(
            index.values("user", None),
            Some(vec![json!("ann"), json!("bob")])
        );
        index.count_socket(&data(json!({"user": "bob"})), false);
        assert_eq!(index.values("user", None), Some(vec![json!("ann")]));
        assert_eq!(index.values("room", None), None);
    }

    #[test]
    fn a_change_moves_the_socket_and_a_pending_change_shows_without_being_counted() {
        let index = OnlineIndex::default();
        index.track("name");
        index.count_socket(&data(json!({"name": "ann"})), true);
        index.count_socket(&data(json!({})), true);
        index.change("name", None, &json!("cy"));
        assert_eq!(
            index.values("name", None),
            Some(vec![json!("ann"), json!("cy")])
        );
        // The socket holding "ann" is renaming itself to "bo" in a rule not finished yet.
        let pending = json!("bo");
        assert_eq!(
            index.values("name", Some((Some(&json!("ann")), Some(&pending)))),
            Some(vec![json!("bo"), json!("cy")])
        );
        index.change("name", Some(&json!("ann")), &pending);
        assert_eq!(
            index.values("name", None),
            Some(vec![json!("bo"), json!("cy")])
        );
        index.change("name", Some(&json!("bo")), &Value::Null);
        assert_eq!(index.values("name", None), Some(vec![json!("cy")]));
    }

    #[test]
    fn objects_that_differ_only_in_key_order_are_one_value() {
        let index = OnlineIndex::default();
        index.track("who");
        let one: Value = serde_json::from_str(r#"{"id":1,"n":"a"}"#).expect("json");
        let other: Value = serde_json::from_str(r#"{"n":"a","id":1}"#).expect("json");
        index.count_socket(&data(json!({ "who": one })), true);
        index.count_socket(&data(json!({ "who": other })), true);
        assert_eq!(index.values("who", None).map(|v| v.len()), Some(1));
        index.count_socket(&data(json!({ "who": other })), false);
        assert_eq!(index.values("who", None).map(|v| v.len()), Some(1));
        index.count_socket(&data(json!({ "who": one })), false);
        assert_eq!(index.values("who", None), Some(vec![]));
    }
}
