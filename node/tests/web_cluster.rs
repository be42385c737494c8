//! A `web` tenant on real processes (issue 12): two `salesboy serve` nodes on one
//! nats-server and one PostgreSQL, their WhatsApp Web clients pointed at the sandbox's
//! [`FakeWebEndpoint`](salesboy_testkit::FakeWebEndpoint) (`SALESBOY_WHATSAPP_WEB_URL`, one
//! URL per node, so every connection attempt is counted under the node that made it). The
//! endpoint refuses every upgrade: the clients back off and try again, as they would while
//! WhatsApp is unreachable. Logging in needs WhatsApp's servers: not tested here.
#![cfg(feature = "web-engine")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use salesboy_node::bus::{Bus, NatsBus, NatsBusOptions};
use salesboy_node::cluster::wire::{ControlReply, ControlRequest};
use salesboy_node::cluster::{DRAIN_TIMEOUT, control_request};
use salesboy_node::store::WebSessionError;
use salesboy_protocol::{NodeId, TenantId};
use salesboy_testkit::{ClusterSandbox, Db, eventually};
use serde_json::json;
use sqlx::Row;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::traits::DeviceStore;

/// How long a condition may take to come true (a `web` tenant hosted nowhere is started
/// within 10 s; the clients' first backoffs are 1 s, 1 s, 2 s).
const WAIT: Duration = Duration::from_secs(60);

const TENANT: &str = "corner-shop";

#[tokio::test]
async fn a_web_tenant_moves_between_two_nodes_keeping_its_identity() {
    salesboy_node::run::install_crypto_provider();
    let sandbox = ClusterSandbox::builder()
        .nodes(2)
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .database(Db::Postgres)
        .env("RUST_LOG", "info")
        .start()
        .await
        .expect("cluster starts");
    let bus = bus(&sandbox).await;
    let tenant = TenantId::new(TENANT).expect("tenant id");
    let endpoint = sandbox.whatsapp_web();

    // A `web` tenant, created on node-0: some node starts it, and its client connects.
    let created = sandbox
        .http()
        .post(format!("{}/api/tenants", sandbox.http_base(0).unwrap()))
        .bearer_auth(sandbox.admin_token())
        .json(&json!({"id": TENANT, "name": "Corner shop", "engine": "web"}))
        .send()
        .await
        .expect("tenant created");
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let (from, first_epoch) = eventually(WAIT, || async {
        placement(&bus)
            .await
            .filter(|(node, _)| endpoint.attempts(node) >= 1)
    })
    .await;
    let to = if from == "node-0" { "node-1" } else { "node-0" };

    // It moves: the old host shuts its client down (writing the device) before the handoff.
    migrate(&bus, &tenant, &from, to).await;
    let moved = Instant::now();
    let (host, epoch) = placement(&bus).await.expect("placed");
    assert_eq!(host, to);
    assert!(epoch > first_epoch, "{epoch} after {first_epoch}");
    let identity = device(&sandbox, &tenant, epoch)
        .await
        .expect("the device is stored");
    let written_ms = device_updated_ms(&sandbox).await;

    // The new host's client connects, and tries again after its backoff; the old host's
    // never again (its client was shut down before the handoff, and fenced anyway).
    eventually(WAIT, || async {
        (endpoint.attempts(to) >= 2).then_some(())
    })
    .await;
    assert_eq!(
        endpoint.attempts_since(&from, moved),
        0,
        "the old host connected after the move: {:?}",
        endpoint.all_attempts()
    );

    // A late write of the old host's epoch is refused and changes nothing.
    let late = sandbox
        .store()
        .web_session_store(tenant.clone(), first_epoch);
    let mut stale = identity.clone();
    stale.registration_id = identity.registration_id.wrapping_add(1);
    stale.push_name = "late write".to_owned();
    let error = late.save(&stale).await.expect_err("a stale write");
    let ours = WebSessionError::find(&error).unwrap_or_else(|| panic!("not ours: {error:?}"));
    assert!(ours.is_fenced(), "{ours}");
    let kept = device(&sandbox, &tenant, epoch).await.expect("a device");
    assert_eq!(
        (kept.registration_id, kept.push_name.as_str()),
        (identity.registration_id, identity.push_name.as_str()),
        "the late write changed nothing"
    );

    // It moves back: the second host writes the device it loaded, the same identity.
    migrate(&bus, &tenant, to, &from).await;
    let (_, last_epoch) = placement(&bus).await.expect("placed");
    let after = device(&sandbox, &tenant, last_epoch)
        .await
        .expect("a device");
    assert!(
        device_updated_ms(&sandbox).await > written_ms,
        "the second host wrote the device (it runs, then shuts its client down)"
    );
    assert_eq!(after.registration_id, identity.registration_id);
    assert_eq!(
        after.identity_key.public_key.public_key_bytes(),
        identity.identity_key.public_key.public_key_bytes()
    );
    assert_eq!(
        after.noise_key.public_key.public_key_bytes(),
        identity.noise_key.public_key.public_key_bytes()
    );
}

/// A bus to the sandbox's NATS, sealed with its cluster key (the directory, control
/// requests).
async fn bus(sandbox: &ClusterSandbox) -> Arc<dyn Bus> {
    salesboy_testkit::sandbox_sealed_bus(Arc::new(
        NatsBus::connect(
            &sandbox.nats_url(),
            NatsBusOptions {
                name: "web-cluster-test".into(),
                ..Default::default()
            },
        )
        .await
        .expect("test connects to nats"),
    ))
}

/// Where the tenant is placed, and its epoch, from the directory bucket.
async fn placement(bus: &Arc<dyn Bus>) -> Option<(String, u64)> {
    let kv = bus
        .kv(salesboy_protocol::subjects::DIRECTORY_BUCKET, 1)
        .await
        .expect("directory");
    let entries: HashMap<String, serde_json::Value> = kv
        .entries()
        .await
        .expect("entries")
        .into_iter()
        .map(|entry| {
            let value = serde_json::from_slice(&entry.value).expect("placement json");
            (entry.key, value)
        })
        .collect();
    let placement = entries.get(TENANT)?;
    Some((
        placement["node"].as_str()?.to_owned(),
        placement["epoch"].as_u64()?,
    ))
}

/// Moves the tenant from node `from` to node `to`, and waits for the move to be done.
async fn migrate(bus: &Arc<dyn Bus>, tenant: &TenantId, from: &str, to: &str) {
    let reply = control_request(
        bus.as_ref(),
        &salesboy_testkit::sandbox_cluster_key(),
        &NodeId::new(from).expect("node id"),
        &ControlRequest::MigrateOut {
            tenant: tenant.clone(),
            to: NodeId::new(to).expect("node id"),
        },
        DRAIN_TIMEOUT,
    )
    .await
    .expect("the move answered");
    assert_eq!(reply, ControlReply::Ok, "moving from {from} to {to}");
}

/// The tenant's device as the store holds it, read at `epoch`.
async fn device(sandbox: &ClusterSandbox, tenant: &TenantId, epoch: u64) -> Option<Device> {
    sandbox
        .store()
        .web_session_store(tenant.clone(), epoch)
        .load()
        .await
        .expect("the device is readable")
}

/// When the tenant's device row was last written (0 without one).
async fn device_updated_ms(sandbox: &ClusterSandbox) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(sandbox.database_url())
        .await
        .expect("plain sql pool");
    let row = sqlx::query("SELECT updated_ms FROM web_devices WHERE tenant_id = $1")
        .bind(TENANT)
        .fetch_optional(&pool)
        .await
        .expect("web_devices readable");
    pool.close().await;
    row.map_or(0, |row| row.get::<i64, _>(0))
}
