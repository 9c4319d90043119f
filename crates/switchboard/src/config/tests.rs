//! The config's loading and validation, as a user meets them: defaults, errors naming key and
//! line, environment overrides, secrets.

use std::time::Duration;

use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!("sb-config-{}", rand::random::<u64>()));
    std::fs::write(&dir, text).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let result = Config::load_with_env(Some(&dir), &Overrides::default(), &env);
    let _ = std::fs::remove_file(&dir);
    result
}

#[test]
fn defaults_need_no_file() {
    let config = Config::load_with_env(None, &Overrides::default(), &[]).unwrap();
    assert_eq!(config.server.port, 4000);
    assert_eq!(config.server.path, "/socket.io/");
    assert_eq!(config.namespace_names(), ["/"]);
}

#[test]
fn a_typo_names_the_key_and_line() {
    let error = load("[server]\nport = 4001\nprot = 1\n", &[]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(":3:"), "{message}");
    assert!(message.contains("prot"), "{message}");
    let ConfigError::File { line, key, .. } = error else {
        panic!()
    };
    assert_eq!(line, 3);
    assert_eq!(key.as_deref(), Some("server.prot"));
}

#[test]
fn a_sharded_cluster_takes_several_servers_and_a_subscription_mode() {
    let config = load(
        "[cluster]\nadapter = \"sharded\"\nredis_url = \"redis://10.0.0.1:7000, redis://10.0.0.2:7000\"\nsubscription_mode = \"dynamic-private\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(config.cluster.adapter, AdapterKind::Sharded);
    assert_eq!(
        config.cluster.subscription_mode,
        super::SubscriptionMode::DynamicPrivate
    );
    for (text, key) in [
        ("[cluster]\nadapter = \"sharded\"\n", "cluster.adapter"),
        (
            "[cluster]\nadapter = \"sharded\"\nredis_url = \"redis://h:1,nope\"\n",
            "cluster.redis_url",
        ),
        (
            "[cluster]\nadapter = \"sharded\"\nredis_url = \"redis://h:1\"\nsubscription_mode = \"sometimes\"\n",
            "subscription_mode",
        ),
        (
            "[cluster]\nredis_url = \"redis://h:1\"\nredis_cluster = true\n",
            "cluster.redis_cluster",
        ),
    ] {
        let message = load(text, &[]).unwrap_err().to_string();
        assert!(message.contains(key), "{text}: {message}");
    }
}

#[test]
fn a_postgres_cluster_needs_its_url_and_the_adapter_and_bad_keys_are_named() {
    let config = load(
        "[cluster]\nadapter = \"postgres\"\npostgres_url = \"postgres://app@10.0.0.5/app\"\n",
        &[],
    )
    .unwrap();
    assert!(config.cluster.configured());
    assert_eq!(config.cluster.attachments_table, "socket_io_attachments");
    for (text, key) in [
        ("[cluster]\nadapter = \"postgres\"\n", "cluster.adapter"),
        (
            "[cluster]\npostgres_url = \"postgres://app@10.0.0.5/app\"\n",
            "cluster.postgres_url",
        ),
        (
            "[cluster]\nadapter = \"postgres\"\npostgres_url = \"postgres://h/d\"\nredis_url = \"redis://h\"\n",
            "cluster.redis_url",
        ),
        (
            "[cluster]\nadapter = \"postgres\"\npostgres_url = \"postgres://h/d\"\nattachments_table = \"x; DROP\"\n",
            "cluster.attachments_table",
        ),
    ] {
        let message = load(text, &[]).unwrap_err().to_string();
        assert!(message.contains(key), "{text}: {message}");
    }
}

#[test]
fn a_cluster_is_configured_by_its_redis_url_and_a_bad_one_is_named() {
    let config = load(
        "[cluster]\nkey = \"app\"\n",
        &[("SWITCHBOARD_CLUSTER_REDIS_URL", "redis://10.0.0.5:6379/2")],
    )
    .unwrap();
    assert_eq!(
        config.cluster.redis_url.as_deref(),
        Some("redis://10.0.0.5:6379/2")
    );
    assert_eq!(config.cluster.key, "app");
    let error = load("[server]\n[cluster]\nredis_url = \"http://x\"\n", &[]).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(":3:") && message.contains("cluster.redis_url"),
        "{message}"
    );
}

#[test]
fn an_advertised_address_is_host_and_port() {
    for good in ["10.0.0.5:3000", "node-a.internal:4000", "[::1]:4000"] {
        let text = format!("[cluster]\nadvertise_address = \"{good}\"\n");
        let config = load(&text, &[]).unwrap();
        assert_eq!(config.cluster.advertise_address.as_deref(), Some(good));
    }
    for bad in [
        "10.0.0.5",
        "http://10.0.0.5:3000",
        ":3000",
        "host:0",
        "host:port",
    ] {
        let text = format!("[server]\n[cluster]\nadvertise_address = \"{bad}\"\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(
            message.contains("cluster.advertise_address") && message.contains(":3:"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn a_wrong_type_names_the_key_and_line() {
    let error = load("[engine]\n\nping_interval = \"soon\"\n", &[]).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(":3:") && message.contains("engine.ping_interval"),
        "{message}"
    );
}

#[test]
fn environment_overrides_the_file() {
    let config = load(
        "[engine]\nping_interval = \"10s\"\n",
        &[
            ("SWITCHBOARD_ENGINE_PING_INTERVAL", "3s"),
            ("SWITCHBOARD_API_KEYS", "key-one-123,key-two-456"),
            ("SWITCHBOARD_CORS_ORIGINS", "https://a.example.com"),
            ("PORT", "5005"),
        ],
    )
    .unwrap();
    assert_eq!(config.engine.ping_interval.0, Duration::from_secs(3));
    assert_eq!(config.api.keys, ["key-one-123", "key-two-456"]);
    assert_eq!(config.cors.origins, ["https://a.example.com"]);
    assert_eq!(config.server.port, 5005);
    let error = load("", &[("SWITCHBOARD_ENGINE_PING_INTERVL", "3s")]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("SWITCHBOARD_ENGINE_PING_INTERVL"),
        "{error}"
    );
    let error = load("", &[("SWITCHBOARD_NOPE", "3s")]).unwrap_err();
    assert!(error.to_string().contains("SWITCHBOARD_NOPE"), "{error}");
}

#[test]
fn secrets_come_from_named_variables() {
    let config = load(
        "[api]\nkeys = [\"${MY_KEY}\"]\n",
        &[("MY_KEY", "secret-from-env")],
    )
    .unwrap();
    assert_eq!(config.api.keys, ["secret-from-env"]);
    let error = load("[api]\nkeys = [\"${MISSING_KEY}\"]\n", &[]).unwrap_err();
    assert!(error.to_string().contains("MISSING_KEY"), "{error}");
    assert!(error.to_string().contains(":2:"), "{error}");
}

#[test]
fn invalid_values_name_their_key() {
    let error = load("[engine]\ntransports = [\"carrier-pigeon\"]\n", &[]).unwrap_err();
    assert!(error.to_string().contains("engine.transports"), "{error}");
    assert!(error.to_string().contains(":2:"), "{error}");
}

#[test]
fn backend_settings_are_checked_with_key_and_line() {
    let error = load("[proxy.connect]\nurl = \"ftp://backend\"\n", &[]).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("proxy.connect.url") && message.contains(":2:"),
        "{message}"
    );
    let error = load("[webhooks]\nurl = \"http://backend/hooks\"\n", &[]).unwrap_err();
    assert!(error.to_string().contains("webhooks.secret"), "{error}");
    let error = load(
        "[webhooks]\nevents = [\"socket_connected\", \"user_exploded\"]\n",
        &[],
    )
    .unwrap_err();
    assert!(error.to_string().contains("user_exploded"), "{error}");
    let error = load(
        "[[namespaces]]\nname = \"/\"\n[[namespaces.events]]\non = \"message\"\nactions = [{ ack = \"x\" }]\n[[proxy.events]]\nevent = \"message\"\nurl = \"http://b/m\"\n",
        &[],
    )
    .unwrap_err();
    assert!(error.to_string().contains("handled twice"), "{error}");
    let config = load(
        "[[proxy.events]]\nevent = \"message\"\nurl = \"http://b/m\"\n[webhooks]\nurl = \"http://b/h\"\nsecret = \"${HOOK_SECRET}\"\n",
        &[("HOOK_SECRET", "a-long-enough-secret")],
    )
    .unwrap();
    assert_eq!(config.proxy.events[0].timeout.0, Duration::from_secs(5));
    assert_eq!(config.webhooks.max_attempts, 6);
}

#[test]
fn a_duration_too_long_to_hold_is_an_error_naming_its_key() {
    // Found by tests/fuzz_decoders.rs: this used to panic instead of answering an error.
    let error = load("[presence]\ngrace = \"99999999999999999993s\"\n", &[]).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("presence.grace") && message.contains(":2:"),
        "{message}"
    );
}

#[test]
fn tracing_is_off_by_default_and_its_settings_are_checked() {
    let config = load("", &[]).unwrap();
    assert_eq!(config.tracing.otlp_endpoint, None);
    let config = load(
        "[tracing]\notlp_endpoint = \"http://collector:4318\"\nsample_ratio = 0.25\n",
        &[],
    )
    .unwrap();
    assert_eq!(config.tracing.sample_ratio, 0.25);
    for (text, key) in [
        ("[tracing]\nsample_ratio = 2.0\n", "tracing.sample_ratio"),
        (
            "[tracing]\notlp_endpoint = \"collector:4318\"\n",
            "tracing.otlp_endpoint",
        ),
    ] {
        let message = load(text, &[]).unwrap_err().to_string();
        assert!(message.contains(key), "{text}: {message}");
    }
}
