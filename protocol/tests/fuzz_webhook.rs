//! Property tests (proptest) of the webhook parser, the fuzzing of docs/security.md: arbitrary
//! bytes, arbitrary JSON and structured mutations of the real fixtures never make
//! [`parse_webhook_items`] or [`parse_webhook`] panic, and no item is lost: every message,
//! status and echo of a routable change comes out exactly once (as its event or as a
//! rejected item naming its path), every unroutable entry or change once as a rejected item,
//! and every rejected item's path leads to the JSON it carries.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by default, a few seconds in
//! all); `PROPTEST_CASES=100000 cargo test -p salesboy-protocol --test
//! fuzz_webhook --release` is the longer run.

use proptest::prelude::*;
use salesboy_protocol::whatsapp::inbound::{IgnoredReason, MAX_REJECTED_RAW_BYTES, WebhookEvent};
use salesboy_protocol::whatsapp::webhook::{
    MAX_WEBHOOK_BODY_BYTES, Metadata, WebhookError, parse_webhook, parse_webhook_items,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The lists whose every element is one event (its own or a rejected item).
const EVENT_LISTS: [&str; 3] = ["messages", "statuses", "message_echoes"];

/// The keys the generator prefers: the ones the parser looks at.
const KEYS: [&str; 24] = [
    "object",
    "entry",
    "id",
    "changes",
    "field",
    "value",
    "metadata",
    "phone_number_id",
    "display_phone_number",
    "contacts",
    "messages",
    "statuses",
    "errors",
    "message_echoes",
    "wa_id",
    "profile",
    "from",
    "to",
    "type",
    "text",
    "body",
    "timestamp",
    "status",
    "recipient_id",
];

/// Strings the generator prefers: valid and barely invalid ids, values the parser matches.
const STRINGS: [&str; 16] = [
    "",
    "whatsapp_business_account",
    "messages",
    "smb_message_echoes",
    "106540352242922",
    "16505551234",
    "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
    "wamid with spaces",
    "text",
    "image",
    "sent",
    "delivered",
    "read",
    "failed",
    "1795869900",
    "-1",
];

/// Every webhook body among the fixtures (pretty, wire and project forms), read once.
fn fixtures() -> &'static [Vec<u8>] {
    static FIXTURES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
        let root = format!("{}/tests/fixtures/whatsapp", env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        for dir in ["", "wire", "project"] {
            let dir = std::path::Path::new(&root).join(dir);
            let mut paths: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect();
            paths.sort();
            for path in paths {
                let raw = std::fs::read(&path).unwrap();
                let value: Value = serde_json::from_slice(&raw).unwrap();
                if value["object"] == "whatsapp_business_account" {
                    found.push(raw);
                }
            }
        }
        assert!(found.len() >= 20, "only {} webhook fixtures", found.len());
        found
    });
    &FIXTURES
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&STRINGS[..]).prop_map(str::to_owned),
        2 => ".{0,12}",
        1 => "[0-9]{60,70}",
        1 => "\\PC{0,40}",
    ]
}

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// Arbitrary JSON, biased towards the webhook's vocabulary.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any_key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One structural change to a body, at the node `at` (an index into its nodes, modulo).
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    Duplicate(usize),
    Insert(usize, String, Value),
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), any_json()).prop_map(|(at, value)| Mutation::Replace(at, value)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => (any::<usize>(), any_key(), any_json())
            .prop_map(|(at, key, value)| Mutation::Insert(at, key, value)),
    ]
}

/// The JSON pointers of every node of `value` below the root, in document order.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let path = format!("{at}/{index}");
                out.push(path.clone());
                pointers(item, path, out);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(path.clone());
                pointers(item, path, out);
            }
        }
        _ => {}
    }
}

fn apply(body: &mut Value, mutation: &Mutation) {
    let mut all = Vec::new();
    pointers(body, String::new(), &mut all);
    let pick = |at: usize| all.get(at % all.len().max(1)).cloned();
    match mutation {
        Mutation::Replace(at, value) => {
            if let Some(path) = pick(*at)
                && let Some(node) = body.pointer_mut(&path)
            {
                *node = value.clone();
            }
        }
        Mutation::Remove(at) | Mutation::Duplicate(at) => {
            let Some(path) = pick(*at) else { return };
            let (parent, last) = path.rsplit_once('/').unwrap_or(("", &path));
            let last = last.replace("~1", "/").replace("~0", "~");
            match body.pointer_mut(parent) {
                Some(Value::Object(fields)) => {
                    if matches!(mutation, Mutation::Remove(_)) {
                        fields.remove(&last);
                    }
                }
                Some(Value::Array(items)) => {
                    let index: usize = last.parse().unwrap();
                    if matches!(mutation, Mutation::Remove(_)) {
                        items.remove(index);
                    } else {
                        let copy = items[index].clone();
                        items.insert(index, copy);
                    }
                }
                _ => {}
            }
        }
        Mutation::Insert(at, key, value) => {
            let path = pick(*at).unwrap_or_default();
            if let Some(Value::Object(fields)) = body.pointer_mut(&path) {
                fields.insert(key.clone(), value.clone());
            }
        }
    }
}

/// What the walk over a body must give, counted from the JSON alone.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    /// Elements of the event lists of routable changes: one event each.
    items: usize,
    /// Unknown `field`s: one ignored event each.
    unknown_fields: usize,
    /// Unroutable entries, changes and lists that are not arrays: one rejected item each.
    unroutable: usize,
}

fn expected(body: &Value) -> Expected {
    let mut expected = Expected::default();
    let Some(Value::Array(entries)) = body.get("entry") else {
        expected.unroutable += 1;
        return expected;
    };
    for entry in entries {
        if entry.get("id").and_then(Value::as_str).is_none() {
            expected.unroutable += 1;
            continue;
        }
        let changes = match entry.get("changes") {
            None => continue,
            Some(Value::Array(changes)) => changes,
            Some(_) => {
                expected.unroutable += 1;
                continue;
            }
        };
        for change in changes {
            let value = change.get("value").unwrap_or(&Value::Null);
            let Some(field) = change.get("field").and_then(Value::as_str) else {
                expected.unroutable += 1;
                continue;
            };
            if field != "messages" && field != "smb_message_echoes" {
                expected.unknown_fields += 1;
                continue;
            }
            let routable = value
                .get("metadata")
                .is_some_and(|metadata| Metadata::deserialize(metadata).is_ok());
            if !routable {
                expected.unroutable += 1;
                continue;
            }
            let lists: &[&str] = if field == "messages" {
                &["contacts", "messages", "statuses", "errors"]
            } else {
                &["message_echoes"]
            };
            for list in lists {
                match value.get(*list) {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(items)) if EVENT_LISTS.contains(list) => {
                        expected.items += items.len();
                    }
                    Some(Value::Array(_)) => {}
                    Some(_) => expected.unroutable += 1,
                }
            }
        }
    }
    expected
}

/// `entry[0].changes[1].value.messages[2]` as a JSON pointer.
fn pointer(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, index)) => (name, Some(index.trim_end_matches(']'))),
            None => (part, None),
        };
        out.push('/');
        out.push_str(name);
        if let Some(index) = index {
            out.push('/');
            out.push_str(index);
        }
    }
    out
}

/// Checks the walk of a body that is a JSON object with our `object`.
fn check_accounting(body: &Value) -> Result<(), TestCaseError> {
    let raw = serde_json::to_vec(body).unwrap();
    // What the parser sees (a float may not survive the round trip exactly).
    let body = &serde_json::from_slice::<Value>(&raw).unwrap();
    let events = parse_webhook_items(&raw)
        .map_err(|error| TestCaseError::fail(format!("refused: {error}")))?;
    let want = expected(body);
    let mut got = Expected::default();
    for event in &events {
        match event {
            WebhookEvent::Inbound { .. }
            | WebhookEvent::Status { .. }
            | WebhookEvent::Echo { .. } => got.items += 1,
            WebhookEvent::Ignored { reason, .. } => match reason {
                IgnoredReason::UnknownField { .. } => got.unknown_fields += 1,
                IgnoredReason::Errors { .. } => {}
                _ => got.items += 1,
            },
            WebhookEvent::Rejected { item, .. } => {
                let at = pointer(&item.path);
                let Some(found) = body.pointer(&at) else {
                    // `entry` missing: the whole body is the one unroutable item.
                    prop_assert_eq!(&item.path, "entry");
                    got.unroutable += 1;
                    continue;
                };
                let json = found.to_string();
                prop_assert!(
                    json.starts_with(&item.raw),
                    "{} carries other JSON",
                    item.path
                );
                prop_assert_eq!(item.truncated, json.len() > MAX_REJECTED_RAW_BYTES);
                let mut parts = at.rsplit('/');
                let last = parts.next().unwrap_or("");
                let list = parts.next().unwrap_or("");
                let element = last.parse::<usize>().is_ok() && !matches!(list, "entry" | "changes");
                if element && EVENT_LISTS.contains(&list) {
                    got.items += 1;
                } else if !element {
                    got.unroutable += 1;
                }
            }
        }
    }
    prop_assert_eq!(got, want, "events: {:?}", events);
    // A body that reads strictly reads the same item by item — but for entries and changes
    // written as arrays: serde's derived structs also read the sequence form (`[id,
    // changes]`), so the strict parser takes `"entry": [["1"]]` for an entry without
    // changes where the walk rejects it (Meta never sends that; the endpoint uses the walk).
    if let Ok(strict) = parse_webhook(&raw)
        && objects_all_the_way(body)
    {
        prop_assert_eq!(strict.events(), events);
    }
    Ok(())
}

/// Whether every entry and change of the body is a JSON object.
fn objects_all_the_way(body: &Value) -> bool {
    let entries = body.get("entry").and_then(Value::as_array);
    entries.into_iter().flatten().all(|entry| {
        let changes = entry.get("changes").and_then(Value::as_array);
        entry.is_object() && changes.into_iter().flatten().all(Value::is_object)
    })
}

/// A whole-body refusal is one of the documented four, and only for what they describe.
fn check_refusal(raw: &[u8], error: &WebhookError) -> Result<(), TestCaseError> {
    match error {
        WebhookError::TooLarge { len, .. } => prop_assert!(*len > MAX_WEBHOOK_BODY_BYTES),
        WebhookError::Malformed { .. } => {
            prop_assert!(serde_json::from_slice::<Value>(raw).is_err())
        }
        WebhookError::Invalid { .. } | WebhookError::UnexpectedObject { .. } => {
            let body: Value = serde_json::from_slice(raw).unwrap();
            prop_assert!(
                body.get("object").and_then(Value::as_str) != Some("whatsapp_business_account")
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes: no panic, and a refusal only for a body that is not our webhook.
    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(error) = parse_webhook_items(&raw) {
            check_refusal(&raw, &error)?;
        }
        let _ = parse_webhook(&raw);
    }

    /// A fixture's bytes flipped, cut or spliced: no panic.
    #[test]
    fn mangled_fixture_bytes_never_panic(
        fixture_index in 0..fixtures().len(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut raw = fixtures()[fixture_index].clone();
        for (at, byte, op) in edits {
            let at = at % (raw.len() + 1);
            match op {
                0 if at < raw.len() => raw[at] = byte,
                1 => raw.insert(at, byte),
                _ => raw.truncate(at),
            }
        }
        match parse_webhook_items(&raw) {
            Ok(_) => {
                let body: Value = serde_json::from_slice(&raw).unwrap();
                check_accounting(&body)?;
            }
            Err(error) => check_refusal(&raw, &error)?,
        }
        let _ = parse_webhook(&raw);
    }

    /// Any JSON under our `object`: every item accounted for.
    #[test]
    fn arbitrary_json_bodies_lose_no_item(entry in any_json(), extra in any_json()) {
        let body = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": entry,
            "extra": extra,
        });
        check_accounting(&body)?;
    }

    /// Real fixtures with fields replaced, removed, duplicated or added: every item
    /// accounted for, exactly once.
    #[test]
    fn mutated_fixtures_lose_no_item(
        fixture_index in 0..fixtures().len(),
        mutations in prop::collection::vec(any_mutation(), 1..6),
    ) {
        let mut body: Value = serde_json::from_slice(&fixtures()[fixture_index]).unwrap();
        for mutation in &mutations {
            apply(&mut body, mutation);
        }
        if body.get("object").and_then(Value::as_str) == Some("whatsapp_business_account")
            && body.is_object()
        {
            check_accounting(&body)?;
        } else {
            let raw = serde_json::to_vec(&body).unwrap();
            let error = parse_webhook_items(&raw).expect_err("not our webhook");
            check_refusal(&raw, &error)?;
        }
    }
}
