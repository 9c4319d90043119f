//! The tables and functions the PostgreSQL driver creates when it first connects (idempotent):
//! - `socket_io_attachments` (the `@socket.io/postgres-adapter`'s table): payloads too large for
//!   a notification (8,000 bytes) or not text, fetched by id by whoever is notified;
//! - `switchboard_log`: the ordered log (ids `<ms>-<n>`, as a Redis stream's), appended to by
//!   `switchboard_append` only, which takes a transaction-scoped advisory lock so that ids
//!   increase in commit order, then notifies the log channel (and mirrors an entry whose data
//!   is JSON under [`MIRROR_MAX`] bytes to `<prefix>#<nsp>` for Node.js servers on the postgres
//!   adapter; the writer mirrors the others through the attachments table);
//! - `switchboard_emit`: one statement a backend runs to publish an event, inside its own
//!   transaction if it likes (a rollback publishes nothing);
//! - `switchboard_kv`: keys with an expiry (sessions, node addresses).

/// The DDL, with `{prefix}` (the channel prefix) and `{attachments}` (the attachments table)
/// filled in by [`schema`].
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS {attachments} (
    id          bigserial UNIQUE,
    created_at  timestamptz DEFAULT NOW(),
    payload     bytea
);
CREATE TABLE IF NOT EXISTS switchboard_log (
    ms          bigint NOT NULL,
    n           bigint NOT NULL,
    uid         text NOT NULL,
    nsp         text NOT NULL,
    type        integer NOT NULL,
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT NOW(),
    PRIMARY KEY (ms, n)
);
CREATE TABLE IF NOT EXISTS switchboard_kv (
    key         text PRIMARY KEY,
    value       bytea NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION switchboard_append(p_uid text, p_nsp text, p_type integer, p_data bytea)
RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    last_ms bigint;
    last_n bigint;
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    new_ms bigint;
    new_n bigint;
    id text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('switchboard_log:{prefix}'));
    SELECT ms, n INTO last_ms, last_n FROM switchboard_log ORDER BY ms DESC, n DESC LIMIT 1;
    IF last_ms IS NULL OR now_ms > last_ms THEN
        new_ms := now_ms;
        new_n := 0;
    ELSE
        new_ms := last_ms;
        new_n := last_n + 1;
    END IF;
    INSERT INTO switchboard_log (ms, n, uid, nsp, type, data)
        VALUES (new_ms, new_n, p_uid, p_nsp, p_type, p_data);
    id := new_ms || '-' || new_n;
    PERFORM pg_notify('{prefix}-switchboard-log', id);
    IF get_byte(p_data, 0) = 123 AND length(p_data) < 7000 THEN
        PERFORM pg_notify('{prefix}#' || p_nsp, json_build_object(
            'uid', p_uid, 'nsp', p_nsp, 'type', p_type,
            'data', convert_from(p_data, 'UTF8')::json, 'offset', id)::text);
    END IF;
    RETURN id;
END
$fn$;
CREATE OR REPLACE FUNCTION switchboard_emit(p_nsp text, p_event text, p_args jsonb,
    p_rooms text[] DEFAULT '{}', p_except text[] DEFAULT '{}')
RETURNS text LANGUAGE sql AS $fn$
    SELECT switchboard_append('backend', p_nsp, 3, convert_to(json_build_object(
        'packet', json_build_object('type', 2, 'nsp', p_nsp,
            'data', (jsonb_build_array(p_event) || COALESCE(p_args, '[]'::jsonb))),
        'opts', json_build_object('rooms', to_json(p_rooms), 'except', to_json(p_except),
            'flags', json_build_object()))::text, 'UTF8'));
$fn$;
"#;

/// Entries with JSON data shorter than this are mirrored by `switchboard_append` itself (the
/// number in the SQL below); a notification holds at most 8,000 bytes with the message around.
pub const MIRROR_MAX: usize = 7_000;

/// Whether `switchboard_append` mirrors an entry with this data to Node.js servers itself.
pub fn mirrored_in_sql(data: &[u8]) -> bool {
    data.first() == Some(&b'{') && data.len() < MIRROR_MAX
}

/// The schema for a channel prefix and an attachments table name (both checked by the config to
/// be plain identifiers).
pub fn schema(prefix: &str, attachments: &str) -> String {
    SCHEMA
        .replace("{prefix}", &prefix.replace('\'', "''"))
        .replace("{attachments}", attachments)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_names_the_configured_prefix_and_table() {
        let sql = super::schema("orders", "my_attachments");
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS my_attachments"));
        assert!(sql.contains("pg_notify('orders-switchboard-log', id)"));
        assert!(!sql.contains("{prefix}") && !sql.contains("{attachments}"));
        assert!(sql.contains(&format!("length(p_data) < {}", super::MIRROR_MAX)));
    }
}
