//! The lists `{online.<key>}` reads: for each socket-data key a namespace's rules read that way,
//! how many of the namespace's sockets hold each value. Sockets are counted from the moment they
//! are indexed in the namespace until they leave it, and each `set_data` moves its socket's
//! count from the old value to the new, so a rule gets the list in time proportional to the
//! distinct values, not to the number of sockets.
//!
//! Values are kept in the order of their JSON text (the order `{online.<key>}` lists them in);
//! `null` is never listed.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use serde_json::{Map, Value};

#[derive(Default)]
pub(crate) struct OnlineIndex {
    /// key -> JSON text of a value -> the value and how many sockets hold it.
    keys: Mutex<HashMap<String, BTreeMap<String, Counted>>>,
}

struct Counted {
    value: Value,
    sockets: usize,
}

fn listed(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

impl OnlineIndex {
    /// Counts `key` from now on. Called before clients connect (when rules are installed);
    /// sockets already present are counted by the caller holding their data.
    pub(crate) fn track(&self, key: &str) {
        self.keys.lock().entry(key.to_owned()).or_default();
    }

    pub(crate) fn tracks_any(&self) -> bool {
        !self.keys.lock().is_empty()
    }

    /// A socket with `data` enters the namespace.
    pub(crate) fn add(&self, data: &Map<String, Value>) {
        let mut keys = self.keys.lock();
        for (key, counts) in keys.iter_mut() {
            if let Some(value) = listed(data.get(key)) {
                Self::count(counts, value);
            }
        }
    }

    /// A socket with `data` leaves the namespace.
    pub(crate) fn remove(&self, data: &Map<String, Value>) {
        let mut keys = self.keys.lock();
        for (key, counts) in keys.iter_mut() {
            if let Some(value) = listed(data.get(key)) {
                Self::uncount(counts, value);
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
            .entry(value.to_string())
            .or_insert_with(|| Counted {
                value: value.clone(),
                sockets: 0,
            })
            .sockets += 1;
    }

    fn uncount(counts: &mut BTreeMap<String, Counted>, value: &Value) {
        let text = value.to_string();
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
                listed(old).map(Value::to_string),
                listed(new).map(|value| (value.to_string(), value)),
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
        index.add(&data(json!({"user": "bob"})));
        index.add(&data(json!({"user": "ann"})));
        index.add(&data(json!({"user": "bob"})));
        index.add(&data(json!({"user": null, "room": "x"})));
        assert_eq!(
            index.values("user", None),
            Some(vec![json!("ann"), json!("bob")])
        );
        index.remove(&data(json!({"user": "bob"})));
        assert_eq!(
            index.values("user", None),
            Some(vec![json!("ann"), json!("bob")])
        );
        index.remove(&data(json!({"user": "bob"})));
        assert_eq!(index.values("user", None), Some(vec![json!("ann")]));
        assert_eq!(index.values("room", None), None);
    }

    #[test]
    fn a_change_moves_the_socket_and_a_pending_change_shows_without_being_counted() {
        let index = OnlineIndex::default();
        index.track("name");
        index.add(&data(json!({"name": "ann"})));
        index.add(&data(json!({})));
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
}
