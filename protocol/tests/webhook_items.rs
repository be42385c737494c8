//! The tolerant webhook parser (`parse_webhook_items`): on every fixture it gives the strict
//! parser's events; with any items made unreadable (bad ids, over-long `wa_id`s, missing
//! fields, unknown shapes) it rejects exactly those, each with its path and JSON, and gives
//! the strict parser's events for the rest of the body; only a body that is not a WhatsApp
//! webhook at all is refused.
//!
//! The property is checked over every single mutation of every item of every fixture, and
//! over seeded random combinations of several mutations at once (a small xorshift generator:
//! the same seeds every run, a failure names its seed).

use std::path::PathBuf;

use salesboy_protocol::whatsapp::inbound::{MAX_REJECTED_RAW_BYTES, RejectedItem, WebhookEvent};
use salesboy_protocol::whatsapp::webhook::{WebhookError, parse_webhook, parse_webhook_items};
use serde_json::{Value, json};

/// Every webhook fixture, pretty and wire forms.
const FIXTURES: [&str; 26] = [
    "inbound_text",
    "inbound_text_reply_context",
    "inbound_image",
    "inbound_audio",
    "inbound_reaction",
    "inbound_button_reply",
    "batch_two_messages",
    "status_sent",
    "status_delivered",
    "status_read",
    "status_failed",
    "wire/inbound_text",
    "wire/inbound_text_reply_context",
    "wire/inbound_image",
    "wire/inbound_audio",
    "wire/inbound_reaction",
    "wire/inbound_button_reply",
    "wire/batch_two_messages",
    "wire/status_sent",
    "wire/status_delivered",
    "wire/status_read",
    "wire/status_failed",
    "project/echo_messages",
    "project/mixed_types",
    "project/multi_tenant",
    "project/unknown_type_batch",
];

/// The item lists of a change's value.
const LISTS: [&str; 5] = [
    "contacts",
    "messages",
    "statuses",
    "errors",
    "message_echoes",
];

/// The ways an item is made unreadable.
const MUTATIONS: [Mutation; 4] = [
    Mutation::BadId,
    Mutation::OverLongWaId,
    Mutation::MissingField,
    Mutation::UnknownShape,
];

#[derive(Debug, Clone, Copy)]
enum Mutation {
    /// The item's id does not validate (a wamid with spaces; a contact's over-long `wa_id`;
    /// an error's code as text).
    BadId,
    /// The customer's id is 65 digits (or, for an echo, the wamid is empty).
    OverLongWaId,
    /// A required field is missing (a contact's profile is a number instead).
    MissingField,
    /// The item is not an object.
    UnknownShape,
}

impl Mutation {
    fn apply(self, list: &str, item: &mut Value) {
        let long = "1".repeat(65);
        match (self, list) {
            (Self::UnknownShape, _) => *item = json!(42),
            (Self::BadId, "contacts") => item["wa_id"] = json!("x".repeat(65)),
            (Self::BadId, "errors") => item["code"] = json!("abc"),
            (Self::BadId, _) => item["id"] = json!("wamid with spaces"),
            (Self::OverLongWaId, "contacts" | "messages") => {
                let key = if list == "contacts" { "wa_id" } else { "from" };
                item[key] = json!(long);
            }
            (Self::OverLongWaId, "statuses") => item["recipient_id"] = json!(long),
            (Self::OverLongWaId, "errors") => item["code"] = json!(-1.5),
            (Self::OverLongWaId, _) => item["id"] = json!(""),
            (Self::MissingField, "contacts") => item["profile"] = json!(5),
            (Self::MissingField, list) => {
                let field = match list {
                    "messages" => "from",
                    "statuses" => "recipient_id",
                    "errors" => "code",
                    _ => "to",
                };
                item.as_object_mut().expect("an item object").remove(field);
            }
        }
    }
}

fn fixture(name: &str) -> Value {
    let full: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "whatsapp",
        &format!("{name}.json"),
    ]
    .iter()
    .collect();
    let raw = std::fs::read(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()));
    serde_json::from_slice(&raw).expect("a JSON fixture")
}

/// Where an item is: entry, change, list, index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    entry: usize,
    change: usize,
    list: &'static str,
    index: usize,
}

impl Place {
    fn path(&self) -> String {
        format!(
            "entry[{}].changes[{}].value.{}[{}]",
            self.entry, self.change, self.list, self.index
        )
    }

    fn item<'v>(&self, body: &'v mut Value) -> &'v mut Value {
        &mut body["entry"][self.entry]["changes"][self.change]["value"][self.list][self.index]
    }
}

/// Every item of a body's `messages` and `smb_message_echoes` changes.
fn places(body: &Value) -> Vec<Place> {
    let mut places = Vec::new();
    for (e, entry) in body["entry"].as_array().into_iter().flatten().enumerate() {
        for (c, change) in entry["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if !matches!(
                change["field"].as_str(),
                Some("messages" | "smb_message_echoes")
            ) {
                continue;
            }
            for list in LISTS {
                let items = change["value"][list].as_array().map_or(0, Vec::len);
                for index in 0..items {
                    places.push(Place {
                        entry: e,
                        change: c,
                        list,
                        index,
                    });
                }
            }
        }
    }
    places
}

fn strict_events(body: &Value) -> Vec<WebhookEvent> {
    parse_webhook(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("strict parse of {body}: {e}"))
        .events()
}

fn tolerant_events(body: &Value) -> Vec<WebhookEvent> {
    parse_webhook_items(body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("tolerant parse of {body}: {e}"))
}

/// The rejected items, and the other events.
fn split(events: Vec<WebhookEvent>) -> (Vec<(Option<String>, RejectedItem)>, Vec<WebhookEvent>) {
    let mut rejected = Vec::new();
    let mut others = Vec::new();
    for event in events {
        match event {
            WebhookEvent::Rejected {
                phone_number_id,
                item,
                ..
            } => rejected.push((phone_number_id.map(|p| p.to_string()), item)),
            other => others.push(other),
        }
    }
    (rejected, others)
}

/// Mutates the items at `chosen` (with their mutations) and checks the property: exactly
/// those are rejected, with their paths, phone number ids and JSON, and the other events are
/// the strict parser's of the body without them.
fn check(original: &Value, chosen: &[(Place, Mutation)], label: &str) {
    let mut mutated = original.clone();
    let mut without = original.clone();
    for (place, mutation) in chosen {
        mutation.apply(place.list, place.item(&mut mutated));
    }
    // Remove from the highest index down so the lower ones keep their places.
    let mut removals: Vec<&Place> = chosen.iter().map(|(place, _)| place).collect();
    removals.sort_by_key(|p| std::cmp::Reverse((p.entry, p.change, p.list, p.index)));
    for place in removals {
        let list = &mut without["entry"][place.entry]["changes"][place.change]["value"][place.list];
        list.as_array_mut().expect("a list").remove(place.index);
    }

    let (rejected, others) = split(tolerant_events(&mutated));
    assert_eq!(others, strict_events(&without), "{label}: the other events");
    let mut expected: Vec<String> = chosen.iter().map(|(place, _)| place.path()).collect();
    let mut got: Vec<String> = rejected.iter().map(|(_, item)| item.path.clone()).collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{label}: the rejected paths");
    for (phone_number_id, item) in &rejected {
        let (place, _) = chosen
            .iter()
            .find(|(place, _)| place.path() == item.path)
            .expect("a chosen place");
        let change = &original["entry"][place.entry]["changes"][place.change]["value"];
        assert_eq!(
            phone_number_id.as_deref(),
            change["metadata"]["phone_number_id"].as_str(),
            "{label}: the rejected item's number"
        );
        assert!(
            !item.truncated && !item.reason.is_empty(),
            "{label}: {item:?}"
        );
        let raw: Value = serde_json::from_str(&item.raw).expect("the item's JSON");
        assert_eq!(&raw, place.item(&mut mutated.clone()), "{label}: raw");
    }
}

#[test]
fn every_fixture_reads_the_same_item_by_item_as_strictly() {
    for name in FIXTURES {
        let body = fixture(name);
        let events = tolerant_events(&body);
        assert!(
            events
                .iter()
                .all(|e| !matches!(e, WebhookEvent::Rejected { .. })),
            "{name}"
        );
        assert_eq!(events, strict_events(&body), "{name}");
    }
}

#[test]
fn each_unreadable_item_alone_is_rejected_and_the_rest_kept() {
    let mut checked = 0;
    for name in FIXTURES {
        let body = fixture(name);
        for place in places(&body) {
            for mutation in MUTATIONS {
                // The strict parser refuses the mutated body: the item is unreadable.
                let mut mutated = body.clone();
                mutation.apply(place.list, place.item(&mut mutated));
                assert!(
                    parse_webhook(mutated.to_string().as_bytes()).is_err(),
                    "{name} {} {mutation:?}: still readable",
                    place.path()
                );
                check(&body, &[(place.clone(), mutation)], name);
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "only {checked} cases");
}

/// A small deterministic generator (xorshift64*): the same cases every run.
struct Draws(u64);

impl Draws {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        usize::try_from(value % n as u64).expect("below n")
    }
}

#[test]
fn any_set_of_unreadable_items_is_rejected_item_by_item() {
    // One body of every fixture's entries: several tenants, every kind of item.
    let entries: Vec<Value> = FIXTURES
        .iter()
        .filter(|name| !name.starts_with("wire/"))
        .flat_map(|name| {
            fixture(name)["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let body = json!({"object": "whatsapp_business_account", "entry": entries});
    let all = places(&body);
    for seed in 1..=300u64 {
        let mut draws = Draws(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let count = 1 + draws.below(6);
        let mut chosen: Vec<(Place, Mutation)> = Vec::new();
        while chosen.len() < count {
            let place = all[draws.below(all.len())].clone();
            if chosen.iter().any(|(p, _)| *p == place) {
                continue;
            }
            chosen.push((place, MUTATIONS[draws.below(MUTATIONS.len())]));
        }
        check(&body, &chosen, &format!("seed {seed}"));
    }
}

#[test]
fn an_unroutable_change_or_entry_is_rejected_as_a_whole() {
    let body = fixture("project/multi_tenant");
    let strict = strict_events(&body);
    let first_change_events = strict
        .iter()
        .filter(|e| e.phone_number_id().map(|p| p.as_str()) == Some("106540352242922"))
        .count();

    let mut bad_number = body.clone();
    bad_number["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("1065x");
    let (rejected, others) = split(tolerant_events(&bad_number));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].0, None, "the tenant cannot be told");
    assert_eq!(rejected[0].1.path, "entry[0].changes[0]");
    assert!(
        rejected[0].1.reason.contains("phone number id"),
        "{:?}",
        rejected[0].1
    );
    assert_eq!(others.len(), strict.len() - first_change_events);

    let mut no_id = body.clone();
    no_id["entry"][1]
        .as_object_mut()
        .expect("an entry")
        .remove("id");
    let (rejected, _) = split(tolerant_events(&no_id));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].1.path, "entry[1]");
    assert!(
        rejected[0].0.is_some(),
        "guessed from the entry's first change"
    );

    let no_entries = json!({"object": "whatsapp_business_account", "entry": {"id": "1"}});
    let (rejected, others) = split(tolerant_events(&no_entries));
    assert_eq!((rejected.len(), others.len()), (1, 0));
    assert_eq!(rejected[0].1.path, "entry");
}

#[test]
fn a_huge_item_is_kept_cut_on_a_character_boundary() {
    let mut body = fixture("inbound_text");
    let text = "é".repeat(MAX_REJECTED_RAW_BYTES);
    body["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = json!("wamid with spaces");
    body["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = json!(text);
    let (rejected, others) = split(tolerant_events(&body));
    assert!(others.is_empty());
    let item = &rejected[0].1;
    assert!(item.truncated);
    assert!(item.raw.len() <= MAX_REJECTED_RAW_BYTES);
    assert!(item.raw.len() > MAX_REJECTED_RAW_BYTES - 4);
}

#[test]
fn only_a_body_that_is_not_a_whatsapp_webhook_is_refused() {
    for (label, raw) in [
        ("not json", b"hello".to_vec()),
        (
            "cut short",
            br#"{"object": "whatsapp_business_account", "entry": ["#.to_vec(),
        ),
        ("empty", Vec::new()),
    ] {
        assert!(
            matches!(
                parse_webhook_items(&raw),
                Err(WebhookError::Malformed { .. })
            ),
            "{label}"
        );
    }
    for raw in [r#"[1, 2]"#, r#"{"entry": []}"#, r#"{"object": 5}"#] {
        assert!(
            matches!(
                parse_webhook_items(raw.as_bytes()),
                Err(WebhookError::Invalid { .. })
            ),
            "{raw}"
        );
    }
    assert_eq!(
        parse_webhook_items(br#"{"object": "page", "entry": []}"#),
        Err(WebhookError::UnexpectedObject {
            object: "page".into()
        })
    );
    assert_eq!(
        parse_webhook_items(br#"{"object": "whatsapp_business_account", "entry": []}"#),
        Ok(Vec::new())
    );
}
