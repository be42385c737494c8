//! Moving a live tenant between two nodes (the actor side of live migration): what the
//! subtree holds travels with it, and the old host cannot write any more.

use reqwest::StatusCode;
use salesboy_actors::command::TenantCommand;
use salesboy_actors::handoff::SessionHandoff;
use salesboy_actors::session::{MAX_BLOCKED, SessionStatus};
use salesboy_actors::store::{Direction, StoreError};
use salesboy_protocol::ChatId;
use salesboy_testkit::gateway::WAIT;
use salesboy_testkit::webhooks;
use salesboy_testkit::{Db, Gateway, eventually};

const PHONE: &str = "106540352242922";
const HOURS: &str = "Our shop opens at 9am and closes at 6pm, Monday to Saturday.";

#[tokio::test]
async fn a_moved_tenant_keeps_its_pending_messages_and_pauses_and_answers_once() {
    // Node A waits long for customers to stop typing, so the message is still in its
    // debounce buffer when the tenant moves; node B answers quickly.
    let a = Gateway::start(Db::Sqlite, |c| c.debounce_ms = 60_000).await;
    let shared = a.config.effective_database_url();
    let b = Gateway::start(Db::Sqlite, |c| {
        c.database_url = Some(shared);
        c.debounce_ms = 20;
    })
    .await;
    let tenant = a.add_tenant("acme", PHONE, None).await;
    a.add_knowledge(&tenant, "faq", &[HOURS]).await;
    let waiting = ChatId::new("16505550001").expect("chat");
    let paused = ChatId::new("16505550002").expect("chat");

    a.node
        .node
        .deliver(
            &tenant,
            TenantCommand::SetPaused {
                chat: paused.clone(),
                until_ms: Some(i64::MAX),
            },
        )
        .await
        .expect("pause");
    let status = a
        .post_webhook(&webhooks::text_message(
            PHONE,
            waiting.as_str(),
            "wamid.m1",
            "When do you open?",
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually(WAIT, || async {
        let snapshot = a
            .node
            .node
            .observe_conversation(&tenant, waiting.clone())
            .await?;
        (snapshot.pending == 1).then_some(())
    })
    .await;
    let old_epoch = a
        .node
        .node
        .observe_tenant(&tenant)
        .await
        .expect("hosted on a")
        .epoch;

    // The move: freeze on A, adopt on B under the next epoch, release A.
    let handoff = a.node.node.freeze(&tenant).await.expect("freeze");
    assert_eq!(handoff.epoch, old_epoch);
    let moved = handoff
        .conversations
        .iter()
        .find(|c| c.chat == waiting)
        .expect("waiting chat moves");
    assert_eq!(moved.pending.len(), 1, "the debounce buffer moves");
    let moved_pause = handoff
        .conversations
        .iter()
        .find(|c| c.chat == paused)
        .expect("paused chat moves");
    assert_eq!(moved_pause.paused_until_ms, Some(i64::MAX));
    b.node
        .node
        .adopt(handoff, old_epoch + 1)
        .await
        .expect("adopt");
    let held = a.node.node.release(&tenant).await;
    assert!(held.is_empty(), "nothing arrived while frozen: {held:?}");
    assert!(
        a.node.node.observe_tenant(&tenant).await.is_none(),
        "a no longer hosts it"
    );

    // B answers the moved message once; A never sends.
    let sent = b.whatsapp.wait_for_sent(1, WAIT).await.expect("b answers");
    assert!(sent[0].body.contains("9am"), "{:?}", sent[0].body);
    let messages = b.settled(&tenant, waiting.as_str()).await;
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.direction == Direction::Outbound)
            .count(),
        1
    );
    assert_eq!(a.whatsapp.sent_count(), 0);
    assert_eq!(b.whatsapp.sent_count(), 1);

    // The pause moved too: B does not answer in the paused chat.
    b.post_webhook(&webhooks::text_message(
        PHONE,
        paused.as_str(),
        "wamid.m2",
        "open?",
    ))
    .await;
    b.settled(&tenant, paused.as_str()).await;
    assert_eq!(b.whatsapp.sent_count(), 1);

    // The old host is fenced: a write under its epoch is refused.
    let stale = a
        .store()
        .set_bot_paused(&tenant, &waiting, None, 0, old_epoch)
        .await;
    assert!(
        matches!(stale, Err(StoreError::StaleEpoch { .. })),
        "{stale:?}"
    );
    a.node.stop().await;
    b.node.stop().await;
}

#[tokio::test]
async fn a_move_that_fails_leaves_the_tenant_working_where_it_was() {
    let a = Gateway::start(Db::Sqlite, |c| c.debounce_ms = 300).await;
    let tenant = a.add_tenant("acme", PHONE, None).await;
    a.add_knowledge(&tenant, "faq", &[HOURS]).await;
    a.post_webhook(&webhooks::text_message(
        PHONE,
        "16505550001",
        "wamid.f1",
        "open?",
    ))
    .await;
    eventually(WAIT, || async {
        a.node.node.observe_tenant(&tenant).await.map(|_| ())
    })
    .await;

    a.node.node.freeze(&tenant).await.expect("freeze");
    // Arrives while frozen: held, not lost.
    a.post_webhook(&webhooks::text_message(
        PHONE,
        "16505550002",
        "wamid.f2",
        "open?",
    ))
    .await;
    // The new host refused (for example): thaw in place.
    a.node.node.thaw(&tenant);
    let sent = a
        .whatsapp
        .wait_for_sent(2, WAIT)
        .await
        .expect("both answered after the thaw");
    assert_eq!(sent.len(), 2);
    a.node.stop().await;
}

#[tokio::test]
async fn an_adopted_session_told_to_pause_for_ever_pauses_at_most_an_hour() {
    let a = Gateway::start(Db::Sqlite, |_| {}).await;
    let shared = a.config.effective_database_url();
    let b = Gateway::start(Db::Sqlite, |c| c.database_url = Some(shared)).await;
    let tenant = a.add_tenant("acme", PHONE, None).await;
    // Any command activates the tenant on a.
    a.node
        .node
        .deliver(
            &tenant,
            TenantCommand::SetPaused {
                chat: ChatId::new("16505550001").expect("chat"),
                until_ms: None,
            },
        )
        .await
        .expect("activate");
    let old_epoch = a
        .node
        .node
        .observe_tenant(&tenant)
        .await
        .expect("hosted on a")
        .epoch;
    let mut handoff = a.node.node.freeze(&tenant).await.expect("freeze");
    // What a forged or corrupt handoff on the bus could say.
    handoff.session = Some(SessionHandoff {
        queue: vec![],
        blocked_for_ms: u64::MAX,
        status: SessionStatus::RateLimited,
    });
    b.node
        .node
        .adopt(handoff, old_epoch + 1)
        .await
        .expect("adopt");
    a.node.node.release(&tenant).await;
    let snapshot = b
        .node
        .node
        .observe_tenant(&tenant)
        .await
        .expect("hosted on b");
    let session = snapshot.session.clone().expect("b's session runs");
    assert_eq!(session.status, SessionStatus::RateLimited);
    assert!(snapshot.restarts.values().all(|n| *n == 0), "{snapshot:?}");
    // The pause b keeps is at most the cap, not 584 million years.
    let again = b.node.node.freeze(&tenant).await.expect("freeze on b");
    let blocked_for = again.session.expect("b's session state").blocked_for_ms;
    let cap = u64::try_from(MAX_BLOCKED.as_millis()).expect("cap in ms");
    assert!(blocked_for > 0 && blocked_for <= cap, "{blocked_for} ms");
    b.node.node.release(&tenant).await;
    a.node.stop().await;
    b.node.stop().await;
}
