//! Configured behaviour: the moves teams hand-write in small socket.io servers (join rooms and
//! greet on connect; join, leave, relay or answer on a client event; emit into rooms on an HTTP
//! call from the backend) declared in the TOML config. `spec.rs` is the language,
//! `template.rs` its placeholders, `compile.rs` the checks at load, `run.rs` the execution on
//! sockets and `routes.rs` the HTTP aliases. Documented in docs/configuration.md.

mod compile;
mod routes;
mod run;
pub mod spec;
pub mod template;

use std::sync::Arc;

pub use compile::{CompiledRoute, NamespaceRules, RuleError, compile};

use crate::api::AppState;
use crate::metrics::SourceLabel;

/// Registers every namespace's rules on the hub and returns the router of the HTTP routes.
pub fn install(
    state: &Arc<AppState>,
    namespaces: Vec<(String, NamespaceRules)>,
    routes: &[CompiledRoute],
) -> axum::Router<Arc<AppState>> {
    let emits = state
        .metrics
        .emits
        .get_or_create(&SourceLabel { source: "client" })
        .clone();
    for (name, rules) in namespaces {
        if rules.is_empty() {
            continue;
        }
        let namespace = state.hub.namespace(&name);
        // The lists `{online.<key>}` reads are counted from the first socket on.
        for key in rules.online_keys() {
            namespace.track_online(&key);
        }
        let rule_set = Arc::new(run::RuleSet::new(
            rules,
            state.config.limits.room_name_max,
            emits.clone(),
        ));
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
        if let Some(namespace) = state.hub.of(&route.namespace) {
            for key in route.online_keys() {
                namespace.track_online(&key);
            }
        }
    }
    routes::router(routes, state)
}
