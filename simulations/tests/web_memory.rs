//! The Web memory bench's smoke (`salesboy-sim web-memory`, CI-sized): five `web` tenants
//! seeded on SQLite, a real client each idle on the silent transport, every stored item
//! loaded back. Checks that the measurement ran whole (every client connected and opened a
//! connection, state stored and loaded, figures read); its memory figures depend on the
//! machine and are not asserted.

use salesboy_sim::web_memory::{StoredState, WebMemoryArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_memory_bench_measures_five_idle_sessions() {
    let state = StoredState {
        signal_sessions: 30,
        prekeys: 80,
        app_state_keys: 4,
        identities: 30,
        lid_mappings: 30,
        ..StoredState::default()
    };
    let report = run(&WebMemoryArgs {
        sessions: 5,
        database: None,
        state,
        progress: false,
    })
    .await
    .expect("the bench runs");
    for line in report.human_lines() {
        println!("{line}");
    }

    assert_eq!(report.sessions, 5);
    assert_eq!(report.database, "sqlite");
    assert_eq!(report.clients_connected, 5, "{report:?}");
    assert!(report.connections_opened >= 5, "{report:?}");
    // sessions of 1–3 KiB each, and the rest
    assert!(
        report.stored_bytes_per_tenant > 30 * 1024,
        "{}",
        report.stored_bytes_per_tenant
    );
    assert!(
        report
            .database_bytes_per_tenant
            .is_some_and(|bytes| bytes > 0)
    );
    assert!(
        report.loaded_bytes_per_tenant >= 30 * 1024,
        "{}",
        report.loaded_bytes_per_tenant
    );
    for figures in [report.before, report.idle, report.all_loaded] {
        assert!(figures.rss_bytes > 0 && figures.hwm_bytes >= figures.rss_bytes);
        assert!(figures.threads >= 1);
    }
    let json = serde_json::to_value(&report).expect("the report serialises");
    for field in [
        "rss_per_session_bytes",
        "rss_per_session_all_loaded_bytes",
        "stored_bytes_per_tenant",
        "before",
        "idle",
        "all_loaded",
    ] {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
}
