//! Property tests (proptest) of the configuration loader (docs/security.md, "Fuzzing"):
//! arbitrary `SALESBOY_*` variables, known keys with arbitrary values and unknown keys,
//! never make `Config::load_from` panic; an error names a key that was set; neither an
//! error nor the loaded configuration's `Debug` ever shows a secret's value (or the password
//! in a database or NATS URL). `PROPTEST_CASES` sets the number of cases (256 by default).

use proptest::prelude::*;
use salesboy_node::config::{Config, ConfigError, ENV_PREFIX, KEYS};

/// Planted in every secret the generator makes; must never be shown.
const MARK: &str = "Pl4ntedS3cret";

/// The keys whose values are secrets.
const SECRETS: [&str; 6] = [
    "nats_password",
    "whatsapp_app_secret",
    "whatsapp_verify_token",
    "admin_token",
    "secrets_key",
    "secrets_previous_key",
];

/// The keys whose values are URLs that may carry a password.
const URLS: [&str; 2] = ["database_url", "nats_url"];

/// A value for `key`: anything for ordinary keys, anything around the mark for secrets,
/// URLs with the mark as their password.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let any = prop_oneof![
        "\\PC{0,24}",
        "[0-9]{0,25}",
        "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
        Just(String::new()),
        prop::sample::select(vec![
            "true",
            "false",
            "json",
            "text",
            "127.0.0.1:0",
            "[::1]:65536"
        ])
        .prop_map(str::to_owned),
    ];
    if SECRETS.contains(&key) {
        (any, "[a-f0-9]{0,64}")
            .prop_map(|(before, after)| format!("{before}{MARK}{after}"))
            .boxed()
    } else if URLS.contains(&key) {
        (
            // Not `sqlite:`: its URLs carry no credentials and are shown as they are.
            prop::sample::select(vec!["postgres", "postgresql", "nats", "tls", "http", ""]),
            "\\PC{0,6}",
            "[a-z:0-9.@/?%]{0,16}",
        )
            .prop_map(|(scheme, user, rest)| format!("{scheme}://{user}:{MARK}@{rest}"))
            .boxed()
    } else {
        any.boxed()
    }
}

fn variable() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        8 => prop::sample::select(KEYS).prop_flat_map(|key| {
            value_for(key).prop_map(move |value| {
                (format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()), value)
            })
        }),
        1 => ("[A-Za-z_]{0,12}", "\\PC{0,12}")
            .prop_map(|(key, value)| (format!("{ENV_PREFIX}{key}"), value)),
        1 => ("\\PC{0,12}", "\\PC{0,12}"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_environments_never_panic_or_leak(
        env in prop::collection::vec(variable(), 0..8),
    ) {
        match Config::load_from(None, env.clone()) {
            Ok(config) => {
                let shown = format!("{config:?}");
                prop_assert!(!shown.contains(MARK), "Debug shows a secret: {shown}");
            }
            Err(error) => {
                let shown = error.to_string();
                prop_assert!(!shown.contains(MARK), "error shows a secret: {shown}");
                let key = match &error {
                    ConfigError::UnknownKey { key, .. } | ConfigError::BadValue { key, .. } => key,
                    other => panic!("no file was given: {other}"),
                };
                // The key as the environment spells it (upper case: `SALESBOY_node_id` is read
                // as `SALESBOY_NODE_ID`), or (checks across keys) a known key.
                let named = key.starts_with("\"\" (an empty name")
                    || env.iter().any(|(name, _)| name.eq_ignore_ascii_case(key))
                    || KEYS.contains(&key.as_str())
                    || KEYS.iter().any(|known| key.eq_ignore_ascii_case(&format!("{ENV_PREFIX}{known}")));
                prop_assert!(named, "error names no key that was set: {shown}");
            }
        }
    }
}
