//! The configuration's layers, defaults and checks, and that every key is documented.

use super::*;

/// An admin token long enough.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn debug_never_prints_secrets_or_url_passwords() {
    let config = Config::load_from(
        None,
        env(&[
            (
                "SALESBOY_DATABASE_URL",
                "postgres://app:pg-planted-pw@db/sb",
            ),
            ("SALESBOY_NATS_URL", "nats://node:nats-planted-pw@nats:4222"),
            ("SALESBOY_NATS_USER", "node"),
            ("SALESBOY_NATS_PASSWORD", "nats-planted-password"),
            ("SALESBOY_WHATSAPP_APP_SECRET", "planted-app-secret"),
            ("SALESBOY_WHATSAPP_VERIFY_TOKEN", "planted-verify-token"),
            ("SALESBOY_ADMIN_TOKEN", "planted-admin-token-planted-admin"),
        ]),
    )
    .unwrap();
    let shown = format!("{config:?}");
    for secret in [
        "pg-planted-pw",
        "nats-planted-pw",
        "nats-planted-password",
        "planted-app-secret",
        "planted-verify-token",
        "planted-admin-token-planted-admin",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("postgres://app:***@db/sb"), "{shown}");
    assert!(shown.contains("nats://node:***@nats:4222"), "{shown}");
}

#[test]
fn defaults_are_the_embedded_single_node() {
    let config = Config::load_from(None, env(&[])).unwrap();
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
    assert!(config.nats_url.is_none());
    assert_eq!(
        config.effective_database_url(),
        "sqlite://./salesboy-data/salesboy.db?mode=rwc"
    );
    assert_eq!(config.tenant_idle_secs, 86_400);
}

#[test]
fn environment_overrides_file_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("salesboy.toml");
    std::fs::write(
        &file,
        "debounce_ms = 250\nmax_tenants = 7\nnode_id = \"file-node\"\n",
    )
    .unwrap();
    let config = Config::load_from(
        Some(&file),
        env(&[
            ("SALESBOY_MAX_TENANTS", "9"),
            ("SALESBOY_DATABASE_MAX_CONNECTIONS", "32"),
            ("SALESBOY_ADMIN_TOKEN", TOKEN),
            ("PATH", "/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(config.debounce_ms, 250);
    assert_eq!(config.max_tenants, 9);
    assert_eq!(config.database_max_connections, 32);
    assert_eq!(config.node_id.as_str(), "file-node");
    assert_eq!(config.admin_token.as_ref().unwrap().expose_secret(), TOKEN);
}

#[test]
fn a_renamed_key_is_refused_with_its_new_name() {
    let err = Config::load_from(None, env(&[("SALESBOY_EVENTS_REPLICAS", "3")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "configuration key SALESBOY_EVENTS_REPLICAS (in environment) was renamed: use SALESBOY_NATS_REPLICAS"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "events_replicas = 3\n").unwrap();
    let err = Config::load_from(Some(&file), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("events_replicas") && err.ends_with("was renamed: use nats_replicas"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let err = Config::load_from(None, env(&[("SALESBOY_DEBOUNCE", "5")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown configuration key SALESBOY_DEBOUNCE (in environment)"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "http_adr = \"x\"\n").unwrap();
    let err = Config::load_from(Some(&file), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown configuration key http_adr"), "{err}");
}

#[test]
fn bad_values_are_errors_that_name_the_key() {
    for (name, value, expected) in [
        (
            "SALESBOY_MAX_TENANTS",
            "lots",
            "bad value for SALESBOY_MAX_TENANTS",
        ),
        ("SALESBOY_MAX_TENANTS", "0", "must be greater than zero"),
        (
            "SALESBOY_DATABASE_MAX_CONNECTIONS",
            "0",
            "must be greater than zero",
        ),
        (
            "SALESBOY_HTTP_ADDR",
            "localhost",
            "bad value for SALESBOY_HTTP_ADDR",
        ),
        ("SALESBOY_NODE_ID", "a.b", "node id contains '.'"),
        (
            "SALESBOY_WHATSAPP_API_BASE",
            "ftp://x",
            "http:// or https://",
        ),
        (
            "SALESBOY_WHATSAPP_WEB_URL",
            "https://web.whatsapp.com",
            "ws:// or wss://",
        ),
        (
            "SALESBOY_WHATSAPP_WEB_URL",
            "wss://web whatsapp.com/ws/chat",
            "not a URL",
        ),
    ] {
        let err = Config::load_from(None, env(&[(name, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{name}={value}: {err}");
    }
}

#[test]
fn a_short_admin_token_is_refused_without_being_printed() {
    for short in ["hunter2-hunter2", "0123456789abcdef0123456789abcde", "  "] {
        let result = Config::load_from(None, env(&[("SALESBOY_ADMIN_TOKEN", short)]));
        if short.trim().is_empty() {
            assert!(
                result.unwrap().admin_token.is_none(),
                "blank means generated"
            );
            continue;
        }
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("bad value for SALESBOY_ADMIN_TOKEN (in environment): must be at least 32 characters"),
            "{err}"
        );
        assert!(!err.contains(short), "{err}");
    }
    let config = Config::load_from(None, env(&[("SALESBOY_ADMIN_TOKEN", TOKEN)])).unwrap();
    assert_eq!(config.admin_token.unwrap().expose_secret(), TOKEN);
}

#[test]
fn the_admin_listener_is_optional_and_apart() {
    let config = Config::load_from(None, env(&[])).unwrap();
    assert!(config.admin_http_addr.is_none());
    let config =
        Config::load_from(None, env(&[("SALESBOY_ADMIN_HTTP_ADDR", "127.0.0.1:9090")])).unwrap();
    assert_eq!(
        config.admin_http_addr.unwrap().to_string(),
        "127.0.0.1:9090"
    );
    for (value, expected) in [
        ("admin", "expected an address like"),
        ("127.0.0.1:8080", "must differ from http_addr"),
    ] {
        let err = Config::load_from(None, env(&[("SALESBOY_ADMIN_HTTP_ADDR", value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{value}: {err}");
    }
}

#[test]
fn test_suite_variables_are_not_configuration() {
    assert!(
        Config::load_from(None, env(&[("SALESBOY_TEST_POSTGRES_URL", "postgres://x")])).is_ok()
    );
}

#[test]
fn secrets_do_not_print() {
    let config = Config::load_from(
        None,
        env(&[("SALESBOY_WHATSAPP_APP_SECRET", "topsecretvalue")]),
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("topsecretvalue"));
}

#[test]
fn nats_credentials_come_in_pairs_and_the_password_never_prints() {
    let config = Config::load_from(
        None,
        env(&[
            ("SALESBOY_NATS_USER", "salesboy-node"),
            ("SALESBOY_NATS_PASSWORD", "natspassword42"),
        ]),
    )
    .unwrap();
    let credentials = config.nats_credentials().unwrap();
    assert_eq!(credentials.user, "salesboy-node");
    assert_eq!(credentials.password.expose_secret(), "natspassword42");
    assert!(!format!("{config:?} {credentials:?}").contains("natspassword42"));
    assert!(
        Config::load_from(None, env(&[]))
            .unwrap()
            .nats_credentials()
            .is_none()
    );
    for alone in [
        ("SALESBOY_NATS_USER", "salesboy-node"),
        ("SALESBOY_NATS_PASSWORD", "natspassword42"),
    ] {
        let error = Config::load_from(None, env(&[alone])).unwrap_err();
        assert!(matches!(error, ConfigError::BadValue { .. }), "{error}");
        assert!(!error.to_string().contains("natspassword42"), "{error}");
    }
}

#[test]
fn every_key_is_settable_and_documented() {
    let docs = include_str!("../../../docs/configuration.md");
    for key in KEYS {
        let env_name = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
        assert!(
            !matches!(
                Config::load_from(None, env(&[(&env_name, "x")])),
                Err(ConfigError::UnknownKey { .. })
            ),
            "{key} is not handled"
        );
        assert!(
            docs.contains(&env_name),
            "docs/configuration.md does not document {env_name}"
        );
    }
}

#[test]
fn file_values_may_be_strings_or_numbers_and_secrets_are_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("salesboy.toml");
    std::fs::write(
        &file,
        "max_tenants = \"7\"\nwhatsapp_verify_token = 1234\nlog_format = \"json\"\nnats_url = \"\"\n",
    )
    .unwrap();
    let config = Config::load_from(Some(&file), env(&[])).unwrap();
    assert_eq!(config.max_tenants, 7);
    assert_eq!(
        config.whatsapp_verify_token.unwrap().expose_secret(),
        "1234"
    );
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config.nats_url.is_none());

    std::fs::write(&file, "admin_token = [\"hunter2\"]\n").unwrap();
    let err = Config::load_from(Some(&file), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad value for admin_token"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let err = Config::load_from(None, env(&[("SALESBOY_FAILURE_TIMEOUT_MS", "999")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "bad value for SALESBOY_FAILURE_TIMEOUT_MS (in environment): must be at least 1000"
        ),
        "{err}"
    );
    // 1.5 s: heartbeat 300 ms, fence after 1,050 ms (a 450 ms margin).
    let config = Config::load_from(None, env(&[("SALESBOY_FAILURE_TIMEOUT_MS", "1500")]))
        .expect("1.5 s is allowed");
    let timings = config.membership().expect("valid timings");
    assert_eq!(
        (timings.heartbeat, timings.fence_after),
        (Duration::from_millis(300), Duration::from_millis(1050))
    );
    let config = Config::load_from(
        None,
        env(&[
            ("SALESBOY_FAILURE_TIMEOUT_MS", "3000"),
            ("SALESBOY_HEARTBEAT_MS", "250"),
        ]),
    )
    .expect("a heartbeat of its own");
    assert_eq!(
        config.membership().expect("valid").heartbeat,
        Duration::from_millis(250)
    );
    let err = Config::load_from(
        None,
        env(&[
            ("SALESBOY_FAILURE_TIMEOUT_MS", "1500"),
            ("SALESBOY_HEARTBEAT_MS", "1200"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "bad value for SALESBOY_HEARTBEAT_MS (in environment): must be shorter than 1050 ms"
        ),
        "{err}"
    );
}

#[test]
fn the_defaults_shared_with_the_actor_tree_are_its_own() {
    let (config, actors) = (Config::default(), Settings::default());
    assert_eq!(Duration::from_millis(config.debounce_ms), actors.debounce);
    assert_eq!(config.history_window, actors.history_window);
    assert_eq!(
        Duration::from_secs(config.tenant_idle_secs),
        actors.tenant_idle
    );
    assert_eq!(config.max_tenants, 100_000);
    assert_eq!(config.database_max_connections, 10);
    assert_eq!(config.whatsapp_messages_per_second, 80);
}

#[test]
fn secrets_keys_are_checked_and_never_quoted() {
    let key = crate::secrets::SecretsKey::generate().to_base64();
    let config = Config::load_from(None, env(&[("SALESBOY_SECRETS_KEY", key.as_str())])).unwrap();
    assert_eq!(config.secrets_key.unwrap().expose_secret(), key.as_str());
    assert!(
        !format!(
            "{:?}",
            Config::load_from(None, env(&[("SALESBOY_SECRETS_KEY", key.as_str())])).unwrap()
        )
        .contains(key.as_str())
    );
    let error = Config::load_from(None, env(&[("SALESBOY_SECRETS_KEY", "planted-not-a-key")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("bad value for SALESBOY_SECRETS_KEY"),
        "{error}"
    );
    assert!(!error.contains("planted"), "{error}");
    let error = Config::load_from(
        None,
        env(&[
            ("SALESBOY_SECRETS_KEY", key.as_str()),
            ("SALESBOY_SECRETS_KEY_FILE", "/k"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("not both"), "{error}");
}

#[test]
fn nats_authentication_tls_and_the_cluster_key_are_checked_and_never_quoted() {
    let key = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let config = Config::load_from(
        None,
        env(&[
            ("SALESBOY_NATS_URL", "tls://a:4222,tls://b:4222"),
            ("SALESBOY_NATS_TOKEN", "natstoken-planted"),
            ("SALESBOY_NATS_TLS_CA_FILE", "/etc/ca.pem"),
            ("SALESBOY_NATS_TLS_CERT_FILE", "/etc/c.pem"),
            ("SALESBOY_NATS_TLS_KEY_FILE", "/etc/k.pem"),
            ("SALESBOY_CLUSTER_KEY", key),
        ]),
    )
    .unwrap();
    let options = config.nats_options("n".into());
    assert_eq!(options.token.unwrap().expose_secret(), "natstoken-planted");
    assert_eq!(options.tls.ca_file.unwrap(), PathBuf::from("/etc/ca.pem"));
    assert!(
        crate::cluster::ClusterKey::from_config(&config)
            .unwrap()
            .is_some()
    );
    let printed = format!("{config:?}");
    assert!(
        !printed.contains("planted") && !printed.contains(key),
        "{printed}"
    );

    for (pairs, named) in [
        (
            vec![
                ("SALESBOY_NATS_TOKEN", "natstoken-planted"),
                ("SALESBOY_NATS_CREDENTIALS_FILE", "/etc/n.creds"),
            ],
            "nats_token",
        ),
        (
            vec![("SALESBOY_NATS_TLS_CERT_FILE", "/etc/c.pem")],
            "nats_tls_cert_file",
        ),
        (
            vec![("SALESBOY_CLUSTER_KEY", "short-planted")],
            "cluster_key",
        ),
        (
            vec![
                ("SALESBOY_CLUSTER_KEY", key),
                ("SALESBOY_CLUSTER_KEY_FILE", "/etc/cluster.key"),
            ],
            "cluster_key_file",
        ),
    ] {
        let error = Config::load_from(None, env(&pairs))
            .unwrap_err()
            .to_string();
        assert!(error.to_lowercase().contains(named), "{error}");
        assert!(!error.contains("planted"), "{error}");
    }
    assert!(
        crate::cluster::ClusterKey::from_config(&Config::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn replicas_default_to_three_with_three_servers_and_one_otherwise() {
    let replicas =
        |pairs: &[(&str, &str)]| Config::load_from(None, env(pairs)).map(|c| c.replicas());
    assert_eq!(replicas(&[]).unwrap(), 1);
    assert_eq!(
        replicas(&[("SALESBOY_NATS_URL", "nats://a:4222")]).unwrap(),
        1
    );
    assert_eq!(
        replicas(&[("SALESBOY_NATS_URL", "nats://a:4222, nats://b:4222")]).unwrap(),
        1
    );
    let three = "nats://a:4222,nats://b:4222,nats://c:4222";
    assert_eq!(replicas(&[("SALESBOY_NATS_URL", three)]).unwrap(), 3);
    assert_eq!(
        replicas(&[
            ("SALESBOY_NATS_URL", three),
            ("SALESBOY_NATS_REPLICAS", "1")
        ])
        .unwrap(),
        1
    );
    for bad in ["0", "6"] {
        let error = replicas(&[
            ("SALESBOY_NATS_URL", three),
            ("SALESBOY_NATS_REPLICAS", bad),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("SALESBOY_NATS_REPLICAS"), "{error}");
    }
}

#[test]
fn nats_options_carry_the_replicas() {
    let config = Config::load_from(
        None,
        env(&[(
            "SALESBOY_NATS_URL",
            "nats://a:4222,nats://b:4222,nats://c:4222",
        )]),
    )
    .unwrap();
    assert_eq!(config.nats_options("n".into()).kv_replicas, 3);
}
