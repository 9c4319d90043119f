//! `[admin_ui]`: compatibility with the official Socket.IO Admin UI (off unless enabled).

use serde::{Deserialize, Serialize};

/// `[admin_ui]` in the config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminUiSettings {
    pub enabled: bool,
    pub namespace: String,
    /// Basic auth: the username, and a bcrypt hash of the password. Neither: no auth.
    pub username: Option<String>,
    pub password_hash: Option<String>,
    /// No join, leave, disconnect or emit from the UI.
    pub readonly: bool,
}

impl Default for AdminUiSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: "/admin".into(),
            username: None,
            password_hash: None,
            readonly: false,
        }
    }
}

impl AdminUiSettings {
    /// The config check: a usable hash when auth is on.
    pub fn check(&self) -> Result<(), String> {
        match (&self.username, &self.password_hash) {
            (None, None) => Ok(()),
            (Some(_), Some(hash)) => bcrypt::verify("", hash)
                .map(|_| ())
                .map_err(|e| format!("admin_ui.password_hash is not a bcrypt hash: {e}")),
            _ => Err("admin_ui needs both username and password_hash, or neither".into()),
        }
    }
}
