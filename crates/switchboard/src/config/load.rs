//! Where a setting comes from and where an error is: the environment's `SWITCHBOARD_…`
//! overrides, `${VAR}` expansion for secrets, and the line and column of a key in the file.

use serde::Deserialize;

use super::{Config, ConfigError};

/// The list-valued keys an environment variable fills with a comma-separated value.
const LIST_KEYS: [&str; 9] = [
    "cors.origins",
    "engine.transports",
    "api.keys",
    "auth.algorithms",
    "auth.sources",
    "presence.rooms",
    "webhooks.events",
    "webhooks.client_events",
    "limits.trusted_proxies",
];
const SECTIONS: [&str; 16] = [
    "server",
    "cors",
    "engine",
    "limits",
    "api",
    "recovery",
    "auth",
    "presence",
    "plain_ws",
    "console",
    "admin_ui",
    "cluster",
    "proxy",
    "webhooks",
    "rate_limits",
    "tracing",
];
/// `SWITCHBOARD_…` variables that are not settings.
const NOT_SETTINGS: [&str; 2] = ["SWITCHBOARD_CONFIG", "SWITCHBOARD_LOG"];

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

pub(super) fn file_error(
    text: &str,
    shown_path: &str,
    span: Option<std::ops::Range<usize>>,
    key: Option<String>,
    message: &str,
) -> ConfigError {
    let (line, column) = span.map_or((1, 1), |span| line_and_column(text, span.start));
    let message = match &key {
        Some(key) => format!("key `{key}`: {message}"),
        None => message.to_owned(),
    };
    ConfigError::File {
        path: shown_path.to_owned(),
        line,
        column,
        key,
        message,
    }
}

/// `path:line: ` for the line where the key's last part is set, or "" when it is not in the file.
pub(super) fn locate_key(text: &str, shown_path: &str, key: &str) -> String {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|index| format!("{shown_path}:{}: ", index + 1))
        .unwrap_or_default()
}

/// Replaces `${NAME}` in every string value by the environment variable NAME (for secrets).
pub(super) fn expand_env_references(
    table: &mut toml::Table,
    prefix: &str,
    env: &[(String, String)],
    text: &str,
    shown_path: &str,
) -> Result<(), ConfigError> {
    fn expand(
        value: &mut toml::Value,
        key: &str,
        env: &[(String, String)],
        text: &str,
        shown_path: &str,
    ) -> Result<(), ConfigError> {
        match value {
            toml::Value::String(s) if s.contains("${") => {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let Some(end) = rest[start..].find('}') else {
                        out.push_str(&rest[start..]);
                        rest = "";
                        break;
                    };
                    let name = &rest[start + 2..start + end];
                    let found = env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                    match found {
                        Some(v) => out.push_str(v),
                        None => {
                            return Err(ConfigError::Invalid {
                                location: locate_key(text, shown_path, key),
                                key: key.to_owned(),
                                message: format!("environment variable {name} is not set"),
                            });
                        }
                    }
                    rest = &rest[start + end + 1..];
                }
                out.push_str(rest);
                *s = out;
            }
            toml::Value::Array(items) => {
                for item in items {
                    expand(item, key, env, text, shown_path)?;
                }
            }
            toml::Value::Table(table) => {
                for (k, v) in table.iter_mut() {
                    expand(v, &format!("{key}.{k}"), env, text, shown_path)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        expand(v, &key, env, text, shown_path)?;
    }
    Ok(())
}

/// `SWITCHBOARD_ENGINE_PING_INTERVAL=10s` sets `engine.ping_interval`; list keys split on commas.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    for (variable, raw) in env {
        let Some(rest) = variable.strip_prefix("SWITCHBOARD_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&variable.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = SECTIONS.iter().find_map(|section| {
            rest.strip_prefix(section)
                .and_then(|k| k.strip_prefix('_'))
                .map(|k| (*section, k.to_owned()))
        }) else {
            return Err(ConfigError::Env {
                variable: variable.clone(),
                message: format!("not a setting (sections: {})", SECTIONS.join(", ")),
            });
        };
        let dotted = format!("{section}.{key}");
        let value = if LIST_KEYS.contains(&dotted.as_str()) {
            toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            )
        } else {
            toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.clone()))
        };
        let section_table = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(section_table) = section_table {
            section_table.insert(key, value);
        }
        // Check this one setting on its own, so an error names the variable.
        let mut probe = toml::Table::new();
        probe.insert(section.to_owned(), table[section].clone());
        if let Err(error) = Config::deserialize(toml::Value::Table(probe)) {
            return Err(ConfigError::Env {
                variable: variable.clone(),
                message: error.message().to_owned(),
            });
        }
    }
    Ok(())
}
