//! Configured behaviour: the moves teams hand-write in small socket.io servers (join rooms and
//! greet on connect; join, leave, relay or answer on a client event; emit into rooms on an HTTP
//! call from the backend) declared in the TOML config. The language is part of the config's schema
//! (`config::rules`); here `template.rs` is its placeholders, `compile.rs` the checks at load,
//! `run.rs` the execution on sockets and `types.rs` the TypeScript declaration of the events. The HTTP routes it compiles are served by the API
//! (`api/routes.rs`). Documented in docs/configuration.md.

mod compile;
mod run;
pub mod template;
pub mod types;

use std::sync::Arc;

pub use compile::{CompiledRoute, NamespaceRules, RuleError, compile};

use crate::hub::Hub;
use crate::metrics::{Metrics, SourceLabel};

/// Registers every namespace's rules on the hub, and has the lists `{online.<key>}` reads (in
/// rules and routes) counted.
pub fn install(
    hub: &Hub,
    metrics: &Metrics,
    room_name_max: usize,
    namespaces: Vec<(String, NamespaceRules)>,
    routes: &[CompiledRoute],
) {
    let emits = metrics
        .emits
        .get_or_create(&SourceLabel { source: "client" })
        .clone();
    for (name, rules) in namespaces {
        if rules.is_empty() {
            continue;
        }
        let namespace = hub.namespace(&name);
        // The lists `{online.<key>}` reads are counted from the first socket on.
        for key in rules.online_keys() {
            namespace.track_online(&key);
        }
        let rule_set = Arc::new(run::RuleSet::new(rules, room_name_max, emits.clone()));
        if !rule_set.rules().on_connect.is_empty() {
            let rule_set = rule_set.clone();
            namespace.on_connect(move |socket| rule_set.on_connect(socket));
        }
        for event in rule_set.rules().events.keys() {
            let rule_set = rule_set.clone();
            let name = event.clone();
            namespace.on(event.clone(), move |socket, event| {
                if let Some(rule) = rule_set.rules().events.get(&name) {
                    rule_set.on_event(socket, event, rule);
                }
            });
        }
        if !rule_set.rules().on_disconnect.is_empty() {
            let rule_set = rule_set.clone();
            namespace.on_disconnect(move |socket, _| rule_set.on_disconnect(socket));
        }
    }
    // Routes read `{online.<key>}` lists too (once every namespace exists).
    for route in routes {
        if let Some(namespace) = hub.of(&route.namespace) {
            for key in route.online_keys() {
                namespace.track_online(&key);
            }
        }
    }
}
