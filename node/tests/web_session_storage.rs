//! The WhatsApp Web engine's storage conformance suite (issue 12): one body per behaviour of
//! the library's five storage traits, run against its reference `InMemoryBackend`
//! (`in_memory::<name>`) and against our [`WebSessionStore`] on SQLite (`sqlite::<name>`)
//! and on Postgres (`postgres::<name>`, a fresh database through
//! `SALESBOY_TEST_POSTGRES_URL`, never skipped).
//!
//! The tests of what only our backend does (fencing, a handoff between two nodes, secrets
//! at rest, the tenant's deletion) run on SQLite and Postgres only: the reference has no
//! fencing and no database.
#![cfg(feature = "web-engine")]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{Deletion, StoreError};
use salesboy_node::secrets::{Keyring, SecretsKey};
use salesboy_node::store::{SqlStore, WebSessionError, WebSessionStore};
use salesboy_testkit::Backend as Db;
use salesboy_testkit::web_engine::{WebFixture as Fixture, open_sealed};
use sqlx::Row;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::error::StoreError as LibraryError;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, Backend, DeviceInfo, DeviceListRecord, DeviceStore,
    LidPnMappingEntry, MsgSecretEntry, PendingInboundKey, PendingInboundRow, ProtocolStore,
    SignalStore, TcTokenEntry,
};
use whatsapp_rust::wacore::store::{InMemoryBackend, PersistenceManager};

/// Instantiates the conformance bodies on the reference and both databases, and the SQL
/// bodies on both databases.
macro_rules! suite {
    (conformance: [$($conformance:ident),* $(,)?], sql_only: [$($sql:ident),* $(,)?] $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test]
                async fn $conformance() {
                    super::$conformance(std::sync::Arc::new(super::InMemoryBackend::new())).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $conformance() {
                    let fixture = super::Fixture::new(super::Db::Sqlite).await;
                    super::$conformance(std::sync::Arc::new(fixture.backend(1))).await;
                    fixture.close().await;
                }
            )*
            $(
                #[tokio::test]
                async fn $sql() {
                    let fixture = super::Fixture::new(super::Db::Sqlite).await;
                    super::$sql(&fixture).await;
                    fixture.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $conformance() {
                    let fixture = super::Fixture::new(super::Db::Postgres).await;
                    super::$conformance(std::sync::Arc::new(fixture.backend(1))).await;
                    fixture.close().await;
                }
            )*
            $(
                #[tokio::test]
                async fn $sql() {
                    let fixture = super::Fixture::new(super::Db::Postgres).await;
                    super::$sql(&fixture).await;
                    fixture.close().await;
                }
            )*
        }
    };
}

suite!(
    conformance: [
    identities_round_trip,
    sessions_round_trip_and_batch,
    prekeys_round_trip_and_upload_marks_never_resurrect,
    signed_prekeys_round_trip,
    sender_keys_round_trip,
    app_state_keys_versions_and_macs,
    sender_key_devices_are_tracked_per_group,
    lid_mappings_follow_the_latest_number,
    base_keys_and_group_metadata,
    device_lists_round_trip,
    tc_tokens_newer_wins_and_sender_bucket,
    sent_messages_are_taken_once,
    pending_inbound_buffer,
    msg_secrets_merge_their_expiry,
    the_device_is_created_once_and_saved,
    ],
    sql_only: [
    a_stale_epoch_write_is_refused_and_writes_nothing,
    a_handoff_between_two_nodes_keeps_the_identity,
    key_material_is_sealed_at_rest_and_rotates,
    upload_marks_set_the_flag,
    the_session_goes_with_its_tenant,
    a_logout_forgets_the_session_at_its_epoch_only,
    ],
);

// ---------------------------------------------------------------------------------------
// Harness: the reference, and per SQL test a fresh database with the `web` tenant `acme` at
// epoch 1 (the test kit's `WebFixture`: a store sealing secrets; `open_sealed` opens another
// store on it).
// ---------------------------------------------------------------------------------------

const ALICE: &str = "5511900000001@s.whatsapp.net";
const ALICE_2: &str = "5511900000001:2@s.whatsapp.net";
const BOB: &str = "5511900000002@s.whatsapp.net";

async fn identities_round_trip(backend: Arc<dyn Backend>) {
    assert_eq!(backend.load_identity(ALICE).await.unwrap(), None);
    assert!(
        !backend
            .has_signal_state_for_user("5511900000001")
            .await
            .unwrap()
    );
    backend.put_identity(ALICE, [1; 32]).await.unwrap();
    backend.put_identity(ALICE, [2; 32]).await.unwrap();
    assert_eq!(backend.load_identity(ALICE).await.unwrap(), Some([2; 32]));
    backend
        .put_identities_batch(&[(ALICE_2.into(), [3; 32]), (BOB.into(), [4; 32])])
        .await
        .unwrap();
    assert_eq!(backend.load_identity(ALICE_2).await.unwrap(), Some([3; 32]));
    assert_eq!(backend.load_identity(BOB).await.unwrap(), Some([4; 32]));
    // by user, whatever the device; a longer number with the same start is someone else
    assert!(
        backend
            .has_signal_state_for_user("5511900000001")
            .await
            .unwrap()
    );
    assert!(
        !backend
            .has_signal_state_for_user("551190000000")
            .await
            .unwrap()
    );
    backend.delete_identity(ALICE).await.unwrap();
    assert_eq!(backend.load_identity(ALICE).await.unwrap(), None);
    assert_eq!(backend.load_identity(ALICE_2).await.unwrap(), Some([3; 32]));
}

async fn sessions_round_trip_and_batch(backend: Arc<dyn Backend>) {
    assert_eq!(backend.get_session(ALICE).await.unwrap(), None);
    assert!(!backend.has_session(ALICE).await.unwrap());
    backend.put_session(ALICE, b"ratchet-1").await.unwrap();
    assert!(backend.has_session(ALICE).await.unwrap());
    assert!(
        backend
            .has_signal_state_for_user("5511900000001")
            .await
            .unwrap()
    );
    backend
        .put_sessions_batch(&[
            (ALICE.into(), Bytes::from_static(b"ratchet-2")),
            (BOB.into(), Bytes::from_static(b"bob-1")),
        ])
        .await
        .unwrap();
    assert_eq!(
        backend.get_session(ALICE).await.unwrap().as_deref(),
        Some(&b"ratchet-2"[..])
    );
    assert_eq!(
        backend.get_session(BOB).await.unwrap().as_deref(),
        Some(&b"bob-1"[..])
    );
    backend.delete_session(ALICE).await.unwrap();
    assert_eq!(backend.get_session(ALICE).await.unwrap(), None);
    assert!(backend.has_session(BOB).await.unwrap());
}

async fn prekeys_round_trip_and_upload_marks_never_resurrect(backend: Arc<dyn Backend>) {
    assert_eq!(backend.get_max_prekey_id().await.unwrap(), 0);
    backend.store_prekey(7, b"pk-7", false).await.unwrap();
    backend
        .store_prekeys_batch(
            &[
                (8, Bytes::from_static(b"pk-8")),
                (9, Bytes::from_static(b"pk-9")),
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(backend.get_max_prekey_id().await.unwrap(), 9);
    assert_eq!(
        backend.load_prekey(8).await.unwrap().as_deref(),
        Some(&b"pk-8"[..])
    );
    // only the keys that exist, in the order asked
    let loaded = backend.load_prekeys_batch(&[9, 1, 7]).await.unwrap();
    assert_eq!(
        loaded,
        vec![
            (9, Bytes::from_static(b"pk-9")),
            (7, Bytes::from_static(b"pk-7"))
        ]
    );
    // a key consumed between the upload's snapshot and its mark stays consumed
    backend.remove_prekey(8).await.unwrap();
    backend.mark_prekeys_uploaded(&[7, 8, 9]).await.unwrap();
    assert_eq!(backend.load_prekey(8).await.unwrap(), None);
    assert_eq!(
        backend.load_prekey(7).await.unwrap().as_deref(),
        Some(&b"pk-7"[..])
    );
    assert_eq!(backend.load_prekeys_batch(&[8]).await.unwrap(), vec![]);
    // more than one IN list's worth (1024), stored in one batch, found in the order asked
    let many: Vec<(u32, Bytes)> = (1000..2100)
        .map(|id: u32| (id, Bytes::from(id.to_string())))
        .collect();
    backend.store_prekeys_batch(&many, true).await.unwrap();
    let asked: Vec<u32> = (1000..2100).rev().collect();
    let loaded = backend.load_prekeys_batch(&asked).await.unwrap();
    assert_eq!(loaded.len(), 1100);
    assert_eq!(loaded[0], (2099, Bytes::from("2099")));
    assert_eq!(loaded[1099], (1000, Bytes::from("1000")));
    assert_eq!(backend.get_max_prekey_id().await.unwrap(), 2099);
}

async fn signed_prekeys_round_trip(backend: Arc<dyn Backend>) {
    assert_eq!(backend.load_signed_prekey(1).await.unwrap(), None);
    backend.store_signed_prekey(1, b"spk-1").await.unwrap();
    backend.store_signed_prekey(2, b"spk-2").await.unwrap();
    backend.store_signed_prekey(1, b"spk-1b").await.unwrap();
    assert_eq!(
        backend.load_signed_prekey(1).await.unwrap(),
        Some(b"spk-1b".to_vec())
    );
    let mut all = backend.load_all_signed_prekeys().await.unwrap();
    all.sort();
    assert_eq!(all, vec![(1, b"spk-1b".to_vec()), (2, b"spk-2".to_vec())]);
    backend.remove_signed_prekey(1).await.unwrap();
    assert_eq!(backend.load_signed_prekey(1).await.unwrap(), None);
    assert_eq!(backend.load_all_signed_prekeys().await.unwrap().len(), 1);
}

async fn sender_keys_round_trip(backend: Arc<dyn Backend>) {
    let group_a = "120363000000000001@g.us::5511900000001:2@s.whatsapp.net";
    let group_b = "120363000000000002@g.us::5511900000001:2@s.whatsapp.net";
    assert_eq!(backend.get_sender_key(group_a).await.unwrap(), None);
    backend.put_sender_key(group_a, b"sk-a").await.unwrap();
    backend
        .put_sender_keys_batch(&[
            (group_a.into(), Bytes::from_static(b"sk-a2")),
            (group_b.into(), Bytes::from_static(b"sk-b")),
        ])
        .await
        .unwrap();
    assert_eq!(
        backend.get_sender_key(group_a).await.unwrap(),
        Some(b"sk-a2".to_vec())
    );
    backend.delete_sender_key(group_a).await.unwrap();
    assert_eq!(backend.get_sender_key(group_a).await.unwrap(), None);
    assert_eq!(
        backend.get_sender_key(group_b).await.unwrap(),
        Some(b"sk-b".to_vec())
    );
}

fn sync_key(data: u8, timestamp: i64) -> AppStateSyncKey {
    AppStateSyncKey {
        key_data: vec![data; 32],
        fingerprint: vec![data, 1, 2],
        timestamp,
    }
}

fn mac(index: u8, value: u8) -> AppStateMutationMAC {
    AppStateMutationMAC {
        index_mac: vec![index; 32],
        value_mac: vec![value; 32],
    }
}

async fn app_state_keys_versions_and_macs(backend: Arc<dyn Backend>) {
    assert!(backend.get_sync_key(b"k1").await.unwrap().is_none());
    assert_eq!(backend.get_latest_sync_key_id().await.unwrap(), None);
    backend.set_sync_key(b"k1", sync_key(1, 100)).await.unwrap();
    backend.set_sync_key(b"k2", sync_key(2, 200)).await.unwrap();
    let k1 = backend.get_sync_key(b"k1").await.unwrap().unwrap();
    assert_eq!(
        (k1.key_data, k1.fingerprint, k1.timestamp),
        (vec![1; 32], vec![1, 1, 2], 100)
    );
    assert_eq!(
        backend.get_latest_sync_key_id().await.unwrap(),
        Some(b"k2".to_vec())
    );
    // setting a key again makes it the latest
    backend.set_sync_key(b"k1", sync_key(3, 300)).await.unwrap();
    assert_eq!(
        backend.get_latest_sync_key_id().await.unwrap(),
        Some(b"k1".to_vec())
    );

    let fresh = backend.get_version("regular").await.unwrap();
    assert_eq!(fresh.version, 0);
    let state = HashState {
        version: 5,
        hash: [9; 128],
        index_value_map: HashMap::from([("idx".to_owned(), vec![7; 32])]),
        ..HashState::default()
    };
    backend.set_version("regular", state).await.unwrap();
    let loaded = backend.get_version("regular").await.unwrap();
    assert_eq!(loaded.version, 5);
    assert_eq!(loaded.hash, [9; 128]);
    assert_eq!(loaded.index_value_map.get("idx"), Some(&vec![7; 32]));
    assert_eq!(
        backend.get_version("critical_block").await.unwrap().version,
        0
    );

    backend
        .put_mutation_macs("regular", 5, &[mac(1, 11), mac(2, 12)])
        .await
        .unwrap();
    backend
        .put_mutation_macs("critical_block", 1, &[mac(1, 21)])
        .await
        .unwrap();
    backend
        .put_mutation_macs("regular", 6, &[mac(1, 13)])
        .await
        .unwrap();
    assert_eq!(
        backend.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
        Some(vec![13; 32])
    );
    let many = backend
        .get_mutation_macs("regular", &[[1; 32], [2; 32], [3; 32]])
        .await
        .unwrap();
    assert_eq!(
        many,
        HashMap::from([([1; 32], vec![13; 32]), ([2; 32], vec![12; 32])])
    );
    backend
        .delete_mutation_macs("regular", &[vec![2; 32]])
        .await
        .unwrap();
    assert_eq!(
        backend.get_mutation_mac("regular", &[2; 32]).await.unwrap(),
        None
    );
    backend.clear_mutation_macs("regular").await.unwrap();
    assert_eq!(
        backend.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
        None
    );
    assert_eq!(
        backend
            .get_mutation_mac("critical_block", &[1; 32])
            .await
            .unwrap(),
        Some(vec![21; 32])
    );
    // more than one IN list's worth of MACs, written in one transaction
    let macs: Vec<AppStateMutationMAC> = (0u32..1100)
        .map(|n| {
            let mut index_mac = vec![0; 32];
            index_mac[..4].copy_from_slice(&n.to_be_bytes());
            AppStateMutationMAC {
                index_mac,
                value_mac: n.to_be_bytes().to_vec(),
            }
        })
        .collect();
    backend
        .put_mutation_macs("regular_high", 1, &macs)
        .await
        .unwrap();
    let asked: Vec<[u8; 32]> = macs
        .iter()
        .map(|mac| mac.index_mac.clone().try_into().unwrap())
        .collect();
    let found = backend
        .get_mutation_macs("regular_high", &asked)
        .await
        .unwrap();
    assert_eq!(found.len(), 1100);
    assert_eq!(found[&asked[1099]], 1099u32.to_be_bytes().to_vec());
}

async fn sender_key_devices_are_tracked_per_group(backend: Arc<dyn Backend>) {
    let (g1, g2) = ("120363000000000001@g.us", "120363000000000002@g.us");
    assert!(backend.get_sender_key_devices(g1).await.unwrap().is_empty());
    backend
        .set_sender_key_status(g1, &[(ALICE_2, true), (BOB, false)])
        .await
        .unwrap();
    backend
        .set_sender_key_status(g1, &[(BOB, true)])
        .await
        .unwrap();
    backend
        .set_sender_key_status(g2, &[(ALICE_2, true)])
        .await
        .unwrap();
    let sorted = |mut devices: Vec<(String, bool)>| {
        devices.sort();
        devices
    };
    assert_eq!(
        sorted(backend.get_sender_key_devices(g1).await.unwrap()),
        vec![(ALICE_2.to_owned(), true), (BOB.to_owned(), true)]
    );
    // a device's rows go in every group
    backend
        .delete_sender_key_device_rows(&[ALICE_2])
        .await
        .unwrap();
    assert_eq!(
        backend.get_sender_key_devices(g1).await.unwrap(),
        vec![(BOB.to_owned(), true)]
    );
    assert!(backend.get_sender_key_devices(g2).await.unwrap().is_empty());
    backend
        .set_sender_key_status(g2, &[(ALICE_2, false)])
        .await
        .unwrap();
    backend.clear_sender_key_devices(g1).await.unwrap();
    assert!(backend.get_sender_key_devices(g1).await.unwrap().is_empty());
    assert_eq!(backend.get_sender_key_devices(g2).await.unwrap().len(), 1);
    backend.clear_all_sender_key_devices().await.unwrap();
    assert!(backend.get_sender_key_devices(g2).await.unwrap().is_empty());
}

fn lid(lid: &str, phone: &str, at: i64) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.to_owned(),
        phone_number: phone.to_owned(),
        created_at: at,
        updated_at: at,
        learning_source: "usync".to_owned(),
    }
}

async fn lid_mappings_follow_the_latest_number(backend: Arc<dyn Backend>) {
    assert!(
        backend
            .get_lid_mapping("100000012345678")
            .await
            .unwrap()
            .is_none()
    );
    backend
        .put_lid_mapping(&lid("100000012345678", "5511900000001", 10))
        .await
        .unwrap();
    let found = backend
        .get_pn_mapping("5511900000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.lid, "100000012345678");
    // the LID moves to another number: the old number no longer finds it
    backend
        .put_lid_mapping(&lid("100000012345678", "5511900000009", 20))
        .await
        .unwrap();
    assert!(
        backend
            .get_pn_mapping("5511900000001")
            .await
            .unwrap()
            .is_none()
    );
    let moved = backend
        .get_lid_mapping("100000012345678")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.phone_number.as_str(), moved.updated_at),
        ("5511900000009", 20)
    );
    backend
        .put_lid_mappings(&[
            lid("100000000000002", "5511900000002", 30),
            lid("100000000000003", "5511900000003", 30),
        ])
        .await
        .unwrap();
    let mut all: Vec<String> = backend
        .get_all_lid_mappings()
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.lid)
        .collect();
    all.sort();
    assert_eq!(
        all,
        ["100000000000002", "100000000000003", "100000012345678"]
    );
}

async fn base_keys_and_group_metadata(backend: Arc<dyn Backend>) {
    assert!(
        !backend
            .has_same_base_key(ALICE, "m1", b"base")
            .await
            .unwrap()
    );
    backend.save_base_key(ALICE, "m1", b"base").await.unwrap();
    assert!(
        backend
            .has_same_base_key(ALICE, "m1", b"base")
            .await
            .unwrap()
    );
    assert!(
        !backend
            .has_same_base_key(ALICE, "m1", b"other")
            .await
            .unwrap()
    );
    assert!(
        !backend
            .has_same_base_key(ALICE, "m2", b"base")
            .await
            .unwrap()
    );
    backend.delete_base_key(ALICE, "m1").await.unwrap();
    assert!(
        !backend
            .has_same_base_key(ALICE, "m1", b"base")
            .await
            .unwrap()
    );

    let group = "120363000000000001@g.us";
    assert_eq!(backend.get_group_metadata(group).await.unwrap(), None);
    backend.put_group_metadata(group, b"v1").await.unwrap();
    backend.put_group_metadata(group, b"v2").await.unwrap();
    assert_eq!(
        backend.get_group_metadata(group).await.unwrap(),
        Some(b"v2".to_vec())
    );
    backend.delete_group_metadata(group).await.unwrap();
    assert_eq!(backend.get_group_metadata(group).await.unwrap(), None);
}

fn device_list(user: &str, devices: &[u32], timestamp: i64) -> DeviceListRecord {
    DeviceListRecord {
        user: user.to_owned(),
        devices: devices
            .iter()
            .map(|&id| DeviceInfo::new(id, Some(id)))
            .collect(),
        timestamp,
        phash: Some("2:abc".to_owned()),
        raw_id: Some(7),
    }
}

async fn device_lists_round_trip(backend: Arc<dyn Backend>) {
    assert!(
        backend
            .get_devices("5511900000001")
            .await
            .unwrap()
            .is_none()
    );
    backend
        .update_device_list(device_list("5511900000001", &[0, 2], 10))
        .await
        .unwrap();
    backend
        .update_device_lists(vec![
            device_list("5511900000001", &[0, 2, 5], 20),
            device_list("5511900000002", &[0], 20),
        ])
        .await
        .unwrap();
    let alice = backend.get_devices("5511900000001").await.unwrap().unwrap();
    let ids: Vec<u32> = alice.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(
        (ids, alice.timestamp, alice.raw_id),
        (vec![0, 2, 5], 20, Some(7))
    );
    assert_eq!(alice.phash.as_deref(), Some("2:abc"));
    backend.delete_devices("5511900000001").await.unwrap();
    assert!(
        backend
            .get_devices("5511900000001")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        backend
            .get_devices("5511900000002")
            .await
            .unwrap()
            .is_some()
    );
}

async fn tc_tokens_newer_wins_and_sender_bucket(backend: Arc<dyn Backend>) {
    let jid = "100000012345678@lid";
    // the sender bucket alone makes a placeholder, and only moves forward
    backend
        .touch_tc_token_sender_timestamp(jid, 100)
        .await
        .unwrap();
    backend
        .touch_tc_token_sender_timestamp(jid, 50)
        .await
        .unwrap();
    let placeholder = backend.get_tc_token(jid).await.unwrap().unwrap();
    assert!(placeholder.token.is_empty());
    assert_eq!(placeholder.sender_timestamp, Some(100));
    // a placeholder never blocks the first real token, whatever its time
    backend
        .store_received_tc_token(jid, b"t-1", 10)
        .await
        .unwrap();
    let entry = backend.get_tc_token(jid).await.unwrap().unwrap();
    assert_eq!(
        (entry.token.as_slice(), entry.token_timestamp),
        (&b"t-1"[..], 10)
    );
    assert_eq!(
        entry.sender_timestamp,
        Some(100),
        "the sender bucket is kept"
    );
    // newer wins: an older token is ignored, one as new replaces
    backend
        .store_received_tc_token(jid, b"t-old", 9)
        .await
        .unwrap();
    assert_eq!(
        backend.get_tc_token(jid).await.unwrap().unwrap().token,
        b"t-1"
    );
    backend
        .store_received_tc_token(jid, b"t-2", 10)
        .await
        .unwrap();
    assert_eq!(
        backend.get_tc_token(jid).await.unwrap().unwrap().token,
        b"t-2"
    );
    backend
        .touch_tc_token_sender_timestamp(jid, 150)
        .await
        .unwrap();
    let entry = backend.get_tc_token(jid).await.unwrap().unwrap();
    assert_eq!(
        (entry.token.as_slice(), entry.sender_timestamp),
        (&b"t-2"[..], Some(150))
    );

    let other = "100000000000002@lid";
    backend
        .put_tc_token(
            other,
            &TcTokenEntry {
                token: b"o".to_vec(),
                token_timestamp: 5,
                sender_timestamp: None,
            },
        )
        .await
        .unwrap();
    let mut jids = backend.get_all_tc_token_jids().await.unwrap();
    jids.sort();
    assert_eq!(jids, [other, jid]);
    // pruned only when both the token and the sender bucket are stale
    assert_eq!(backend.delete_expired_tc_tokens(20, 120).await.unwrap(), 1);
    assert!(backend.get_tc_token(other).await.unwrap().is_none());
    assert_eq!(backend.delete_expired_tc_tokens(20, 200).await.unwrap(), 1);
    backend
        .put_tc_token(
            other,
            &TcTokenEntry {
                token: b"o".to_vec(),
                token_timestamp: 5,
                sender_timestamp: None,
            },
        )
        .await
        .unwrap();
    backend.delete_tc_token(other).await.unwrap();
    assert!(backend.get_all_tc_token_jids().await.unwrap().is_empty());
}

async fn sent_messages_are_taken_once(backend: Arc<dyn Backend>) {
    backend
        .store_sent_message(ALICE, "m1", b"payload-1")
        .await
        .unwrap();
    backend
        .store_sent_message(ALICE, "m2", b"payload-2")
        .await
        .unwrap();
    assert_eq!(
        backend.take_sent_message(ALICE, "m1").await.unwrap(),
        Some(b"payload-1".to_vec())
    );
    assert_eq!(backend.take_sent_message(ALICE, "m1").await.unwrap(), None);
    assert_eq!(backend.take_sent_message(BOB, "m2").await.unwrap(), None);
    // many takers at once: exactly one gets it
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move { backend.take_sent_message(ALICE, "m2").await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for taker in takers {
        if taker.await.unwrap().is_some() {
            taken += 1;
        }
    }
    assert_eq!(taken, 1);
    backend
        .store_sent_message(ALICE, "m3", b"payload-3")
        .await
        .unwrap();
    assert_eq!(backend.delete_expired_sent_messages(0).await.unwrap(), 0);
    assert_eq!(
        backend
            .delete_expired_sent_messages(i64::MAX)
            .await
            .unwrap(),
        1
    );
    assert_eq!(backend.take_sent_message(ALICE, "m3").await.unwrap(), None);
}

async fn pending_inbound_buffer(backend: Arc<dyn Backend>) {
    backend
        .store_pending_inbound(ALICE, ALICE_2, "i1", b"hello")
        .await
        .unwrap();
    assert_eq!(
        backend
            .get_pending_inbound(ALICE, ALICE_2, "i1")
            .await
            .unwrap(),
        Some(b"hello".to_vec())
    );
    assert_eq!(
        backend.get_pending_inbound(ALICE, BOB, "i1").await.unwrap(),
        None
    );
    let rows = [
        PendingInboundRow {
            chat: ALICE,
            sender: ALICE_2,
            id: "i2",
            message: b"two",
        },
        PendingInboundRow {
            chat: BOB,
            sender: BOB,
            id: "i1",
            message: b"bob",
        },
    ];
    backend.store_pending_inbound_batch(&rows).await.unwrap();
    backend
        .delete_pending_inbound(ALICE, ALICE_2, "i1")
        .await
        .unwrap();
    assert_eq!(
        backend
            .get_pending_inbound(ALICE, ALICE_2, "i1")
            .await
            .unwrap(),
        None
    );
    let keys = [PendingInboundKey {
        chat: ALICE,
        sender: ALICE_2,
        id: "i2",
    }];
    backend.delete_pending_inbound_batch(&keys).await.unwrap();
    assert_eq!(
        backend
            .get_pending_inbound(ALICE, ALICE_2, "i2")
            .await
            .unwrap(),
        None
    );
    assert_eq!(backend.delete_expired_pending_inbound(0).await.unwrap(), 0);
    assert_eq!(
        backend
            .delete_expired_pending_inbound(i64::MAX)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        backend.get_pending_inbound(BOB, BOB, "i1").await.unwrap(),
        None
    );
}

fn secret(msg_id: &str, byte: u8, expires_at: i64, message_ts: i64) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: ALICE.into(),
        sender: BOB.into(),
        msg_id: msg_id.into(),
        secret: [byte; 32],
        expires_at,
        message_ts,
    }
}

async fn msg_secrets_merge_their_expiry(backend: Arc<dyn Backend>) {
    assert_eq!(
        backend.get_msg_secret(ALICE, BOB, "m1").await.unwrap(),
        None
    );
    backend
        .put_msg_secret(ALICE, BOB, "m0", &[9; 32])
        .await
        .unwrap();
    let stored = backend
        .put_msg_secrets(vec![
            secret("m1", 1, 100, 50),
            secret("m2", 2, 100, 0),
            secret("m3", 3, 100, 0),
        ])
        .await
        .unwrap();
    assert_eq!(stored, 3);
    // keyed by chat, sender and id
    assert_eq!(
        backend.get_msg_secret(ALICE, ALICE, "m1").await.unwrap(),
        None
    );
    // m1: a shorter deadline and an unknown parent time change neither; the secret is new
    // m2: a later deadline wins; m3: 0 (never) wins
    backend
        .put_msg_secrets(vec![
            secret("m1", 4, 90, 0),
            secret("m2", 5, 200, 60),
            secret("m3", 6, 0, 0),
        ])
        .await
        .unwrap();
    assert_eq!(
        backend
            .get_msg_secret_with_ts(ALICE, BOB, "m1")
            .await
            .unwrap(),
        Some((vec![4; 32], 50))
    );
    assert_eq!(
        backend
            .get_msg_secret_with_ts(ALICE, BOB, "m2")
            .await
            .unwrap(),
        Some((vec![5; 32], 60))
    );
    // at 150: m1 (100) goes; m2 (200), m3 and m0 (never) stay
    assert_eq!(backend.delete_expired_msg_secrets(150).await.unwrap(), 1);
    assert_eq!(
        backend.get_msg_secret(ALICE, BOB, "m1").await.unwrap(),
        None
    );
    assert_eq!(
        backend.get_msg_secret(ALICE, BOB, "m2").await.unwrap(),
        Some(vec![5; 32])
    );
    assert_eq!(
        backend.get_msg_secret(ALICE, BOB, "m3").await.unwrap(),
        Some(vec![6; 32])
    );
    assert_eq!(
        backend.get_msg_secret(ALICE, BOB, "m0").await.unwrap(),
        Some(vec![9; 32])
    );
    assert_eq!(
        backend.delete_expired_msg_secrets(i64::MAX).await.unwrap(),
        1
    );
}

async fn the_device_is_created_once_and_saved(backend: Arc<dyn Backend>) {
    assert!(!backend.exists().await.unwrap());
    assert!(backend.load().await.unwrap().is_none());
    backend.create().await.unwrap();
    assert!(backend.exists().await.unwrap());
    let created = backend.load().await.unwrap().expect("create made a device");
    // creating again keeps the device (its keys)
    backend.create().await.unwrap();
    let again = backend.load().await.unwrap().unwrap();
    assert_eq!(
        again.identity_key.public_key.public_key_bytes(),
        created.identity_key.public_key.public_key_bytes()
    );
    let mut device = again;
    device.push_name = "Acme Shop".to_owned();
    device.pn = Some("5511900000001@s.whatsapp.net".parse().unwrap());
    device.next_pre_key_id = 42;
    device.signed_pre_key_signature = [5; 64];
    backend.save(&device).await.unwrap();
    let loaded = backend.load().await.unwrap().unwrap();
    assert_eq!(loaded.push_name, "Acme Shop");
    assert_eq!(loaded.pn, device.pn);
    assert_eq!(loaded.next_pre_key_id, 42);
    assert_eq!(loaded.registration_id, created.registration_id);
    assert_eq!(loaded.signed_pre_key_signature, [5; 64]);
    assert_eq!(loaded.adv_secret_key, created.adv_secret_key);
    assert_eq!(
        loaded.noise_key.private_key.serialize(),
        created.noise_key.private_key.serialize()
    );
    assert_eq!(loaded.device_props, created.device_props);
}

// ---------------------------------------------------------------------------------------
// What only our backend does.
// ---------------------------------------------------------------------------------------

/// Our error inside the library's, which must be a fenced refusal.
fn fenced(error: LibraryError) -> WebSessionError {
    let ours = WebSessionError::find(&error)
        .unwrap_or_else(|| panic!("not our error: {error:?}"))
        .clone();
    assert!(ours.is_fenced(), "{ours}");
    ours
}

async fn a_stale_epoch_write_is_refused_and_writes_nothing(fixture: &Fixture) {
    let old = fixture.backend(1);
    old.put_session(ALICE, b"v1").await.unwrap();
    old.create().await.unwrap();
    let device = old.load().await.unwrap().unwrap();
    fixture.store.claim_epoch(&fixture.tenant, 2).await.unwrap();
    let new = fixture.backend(2);
    new.store_sent_message(ALICE, "m1", b"payload")
        .await
        .unwrap();

    let refused = fenced(old.put_session(ALICE, b"v2").await.unwrap_err());
    assert_eq!(
        refused,
        WebSessionError::Store(StoreError::StaleEpoch {
            tenant: fixture.tenant.clone(),
            given: 1,
            current: 2
        })
    );
    fenced(
        old.put_sessions_batch(&[(BOB.into(), Bytes::from_static(b"bob"))])
            .await
            .unwrap_err(),
    );
    fenced(old.put_identity(BOB, [1; 32]).await.unwrap_err());
    let mut renamed = device.clone();
    renamed.push_name = "late".to_owned();
    fenced(old.save(&renamed).await.unwrap_err());
    fenced(old.take_sent_message(ALICE, "m1").await.unwrap_err());
    fenced(old.delete_session(ALICE).await.unwrap_err());

    // nothing of it was written; reads still work for the old node
    assert_eq!(
        old.get_session(ALICE).await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(new.get_session(BOB).await.unwrap(), None);
    assert_eq!(new.load_identity(BOB).await.unwrap(), None);
    assert_eq!(
        new.load().await.unwrap().unwrap().push_name,
        device.push_name
    );
    assert_eq!(
        new.take_sent_message(ALICE, "m1").await.unwrap(),
        Some(b"payload".to_vec())
    );
    new.put_session(ALICE, b"v2").await.unwrap();

    // a backend made for an epoch not claimed (yet) writes nothing either
    let early = fixture.backend(3);
    assert_eq!(
        fenced(early.put_session(ALICE, b"v3").await.unwrap_err()),
        WebSessionError::EpochNotClaimed {
            tenant: fixture.tenant.clone(),
            epoch: 3,
            current: Some(2)
        }
    );
    assert_eq!(
        new.get_session(ALICE).await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
}

async fn a_handoff_between_two_nodes_keeps_the_identity(fixture: &Fixture) {
    // node A hosts the tenant at epoch 1: the library makes and saves its device
    let on_a: Arc<dyn Backend> = Arc::new(fixture.backend(1));
    let manager = PersistenceManager::new(Arc::clone(&on_a)).await.unwrap();
    let mut device = manager.get_device_snapshot().await;
    device.push_name = "Acme Shop".to_owned();
    on_a.save(&device).await.unwrap();
    on_a.put_session(ALICE, b"ratchet").await.unwrap();

    // the tenant moves: node B claims epoch 2 and loads the same identity
    let node_b = fixture.node().await;
    node_b.claim_epoch(&fixture.tenant, 2).await.unwrap();
    let on_b: Arc<dyn Backend> = Arc::new(node_b.web_session_store(fixture.tenant.clone(), 2));
    let loaded = PersistenceManager::new(Arc::clone(&on_b))
        .await
        .unwrap()
        .get_device_snapshot()
        .await;
    assert_eq!(
        loaded.identity_key.public_key.public_key_bytes(),
        device.identity_key.public_key.public_key_bytes()
    );
    assert_eq!(
        loaded.identity_key.private_key.serialize(),
        device.identity_key.private_key.serialize()
    );
    assert_eq!(loaded.registration_id, device.registration_id);
    assert_eq!(loaded.push_name, "Acme Shop");
    assert_eq!(
        on_b.get_session(ALICE).await.unwrap().as_deref(),
        Some(&b"ratchet"[..])
    );

    // a late flush from node A is refused and changes nothing
    let mut late = device.clone();
    late.push_name = "late flush".to_owned();
    late.registration_id = device.registration_id.wrapping_add(1);
    fenced(on_a.save(&late).await.unwrap_err());
    fenced(on_a.put_session(ALICE, b"stale ratchet").await.unwrap_err());
    let after = on_b.load().await.unwrap().unwrap();
    assert_eq!(
        (after.push_name.as_str(), after.registration_id),
        ("Acme Shop", device.registration_id)
    );
    assert_eq!(
        on_b.get_session(ALICE).await.unwrap().as_deref(),
        Some(&b"ratchet"[..])
    );
    on_b.put_session(ALICE, b"ratchet-2").await.unwrap();
    node_b.close().await;
}

/// Every sealed column's stored values.
async fn sealed_values(raw: &sqlx::AnyPool) -> Vec<String> {
    let mut values = Vec::new();
    for (table, column) in [
        ("web_devices", "device"),
        ("web_signal_sessions", "session"),
        ("web_prekeys", "record"),
        ("web_signed_prekeys", "record"),
        ("web_sender_keys", "record"),
        ("web_app_state_keys", "key_data"),
    ] {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {column} FROM {table}")))
            .fetch_all(raw)
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table} has rows");
        values.extend(rows.iter().map(|row| row.get::<String, _>(0)));
    }
    values
}

async fn key_material_is_sealed_at_rest_and_rotates(fixture: &Fixture) {
    let backend = fixture.backend(1);
    backend.create().await.unwrap();
    let device = backend.load().await.unwrap().unwrap();
    backend.put_session(ALICE, b"ratchet state").await.unwrap();
    backend
        .store_prekey(1, b"one-time pre-key", false)
        .await
        .unwrap();
    backend
        .store_signed_prekey(1, b"signed pre-key")
        .await
        .unwrap();
    backend.put_sender_key(ALICE, b"sender key").await.unwrap();
    backend
        .set_sync_key(b"key-1", sync_key(7, 1))
        .await
        .unwrap();

    let raw = fixture.raw().await;
    for value in sealed_values(&raw).await {
        assert!(value.starts_with("enc:v1:"), "sealed: {value:.40}");
        assert!(
            !value.contains("identity_key"),
            "the device is sealed whole"
        );
    }
    // a node with another key cannot read them
    let stranger = open_sealed(fixture.url(), Keyring::new(SecretsKey::generate(), [])).await;
    let theirs = stranger.web_session_store(fixture.tenant.clone(), 1);
    assert!(theirs.get_session(ALICE).await.is_err());
    assert!(theirs.load().await.is_err());
    stranger.close().await;

    // written by a store without a key, a value is plaintext until the next start seals it
    let keyless = SqlStore::connect(fixture.url()).await.unwrap();
    let plain = keyless.web_session_store(fixture.tenant.clone(), 1);
    plain.put_session(BOB, b"plain ratchet").await.unwrap();
    keyless.close().await;
    let stored: String =
        sqlx::query_scalar("SELECT session FROM web_signal_sessions WHERE address = $1")
            .bind(BOB)
            .fetch_one(&raw)
            .await
            .unwrap();
    assert!(!stored.starts_with("enc:"), "{stored}");
    let reports = fixture.store.seal_plaintext_secrets().await.unwrap();
    let sessions = reports
        .iter()
        .find(|report| report.column == "web_signal_sessions.session")
        .unwrap();
    assert_eq!(
        (sessions.rows, sessions.sealed_plaintext, sessions.unchanged),
        (2, 1, 1)
    );
    assert_eq!(sealed_values(&raw).await.len(), 7);
    assert!(
        sealed_values(&raw)
            .await
            .iter()
            .all(|value| value.starts_with("enc:v1:"))
    );
    assert_eq!(
        backend.get_session(BOB).await.unwrap().as_deref(),
        Some(&b"plain ratchet"[..])
    );

    // a rotation seals them under the new key; the old one is no longer needed
    let new_key = SecretsKey::generate();
    let rotating = open_sealed(
        fixture.url(),
        fixture.keys.clone().rotated_to(new_key.clone()),
    )
    .await;
    let reports = rotating.rotate_secrets(&mut |_| {}).await.unwrap();
    let resealed: u64 = reports.iter().map(|report| report.resealed).sum();
    assert_eq!(resealed, 7, "{reports:?}");
    rotating.close().await;
    let after = open_sealed(fixture.url(), Keyring::new(new_key, [])).await;
    let backend = after.web_session_store(fixture.tenant.clone(), 1);
    let loaded = backend.load().await.unwrap().unwrap();
    assert_eq!(
        loaded.identity_key.private_key.serialize(),
        device.identity_key.private_key.serialize()
    );
    assert_eq!(
        backend.get_session(ALICE).await.unwrap().as_deref(),
        Some(&b"ratchet state"[..])
    );
    assert_eq!(
        backend.load_prekey(1).await.unwrap().as_deref(),
        Some(&b"one-time pre-key"[..])
    );
    assert_eq!(
        backend.load_signed_prekey(1).await.unwrap(),
        Some(b"signed pre-key".to_vec())
    );
    assert_eq!(
        backend.get_sender_key(ALICE).await.unwrap(),
        Some(b"sender key".to_vec())
    );
    assert_eq!(
        backend
            .get_sync_key(b"key-1")
            .await
            .unwrap()
            .unwrap()
            .key_data,
        vec![7; 32]
    );
    after.close().await;
    raw.close().await;
}

async fn upload_marks_set_the_flag(fixture: &Fixture) {
    let backend = fixture.backend(1);
    backend.store_prekey(1, b"a", false).await.unwrap();
    backend.store_prekey(2, b"b", false).await.unwrap();
    backend.store_prekey(3, b"c", true).await.unwrap();
    backend.mark_prekeys_uploaded(&[1, 4]).await.unwrap();
    let raw = fixture.raw().await;
    let flags: Vec<(i64, i64)> = sqlx::query_as("SELECT id, uploaded FROM web_prekeys ORDER BY id")
        .fetch_all(&raw)
        .await
        .unwrap();
    assert_eq!(flags, vec![(1, 1), (2, 0), (3, 1)], "no row for 4");
    raw.close().await;
}

/// A device, a contact's Signal session and identity, and a sent message kept for retries.
async fn seed_session(backend: &WebSessionStore) {
    backend.create().await.unwrap();
    backend.put_session(ALICE, b"ratchet").await.unwrap();
    backend.put_identity(ALICE, [1; 32]).await.unwrap();
    backend
        .store_sent_message(ALICE, "m1", b"payload")
        .await
        .unwrap();
}

/// What [`seed_session`] wrote is gone, as `backend` reads it.
async fn assert_session_gone(fixture: &Fixture, backend: &WebSessionStore) {
    assert!(!backend.exists().await.unwrap());
    assert_eq!(backend.get_session(ALICE).await.unwrap(), None);
    assert_eq!(backend.load_identity(ALICE).await.unwrap(), None);
    let raw = fixture.raw().await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM web_sent_messages")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(left, 0);
    raw.close().await;
}

async fn the_session_goes_with_its_tenant(fixture: &Fixture) {
    let backend = fixture.backend(1);
    seed_session(&backend).await;
    // the session is a credential: it goes even when the tenant's data is kept
    let deleted = fixture
        .store
        .delete_tenant(&fixture.tenant, Deletion::KeepData, 1_700_000_000_000)
        .await
        .unwrap();
    assert!(deleted);
    assert_session_gone(fixture, &backend).await;
}

async fn a_logout_forgets_the_session_at_its_epoch_only(fixture: &Fixture) {
    let backend = fixture.backend(1);
    seed_session(&backend).await;

    // a node that no longer hosts the tenant forgets nothing
    fixture.store.claim_epoch(&fixture.tenant, 2).await.unwrap();
    let refused = backend.forget().await.unwrap_err();
    assert!(refused.is_fenced(), "{refused}");
    assert!(backend.exists().await.unwrap());

    // the host does: every row of the session goes, the tenant stays
    let host = fixture.backend(2);
    host.forget().await.unwrap();
    assert_session_gone(fixture, &host).await;
    assert!(
        fixture
            .store
            .tenant(&fixture.tenant)
            .await
            .unwrap()
            .is_some()
    );
}
