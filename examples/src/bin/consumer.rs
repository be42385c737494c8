//! A durable consumer of one tenant's events: prints each event and acknowledges it once
//! handled. Stopped and started again, it resumes where it stopped, without gaps or
//! duplicates (the consumer's state is kept by JetStream under its name).
//!
//! ```sh
//! cargo run -p salesboy-examples --bin consumer -- acme crm
//! ```

use std::process::ExitCode;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::Value;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tenant, name] = args.as_slice() else {
        eprintln!("usage: consumer <tenant> <durable name>   (NATS_URL sets the server)");
        return ExitCode::from(2);
    };
    match run(tenant, name).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(tenant: &str, name: &str) -> Result<(), async_nats::Error> {
    let client = async_nats::connect(salesboy_examples::nats_url()).await?;
    let js = jetstream::new(client);
    let stream = js.get_stream("SB_EVENTS").await?;
    let consumer = stream
        .get_or_create_consumer(
            name,
            consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: format!("sb.v1.evt.t.{tenant}.>"),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let event: Value = serde_json::from_slice(&message.payload)?;
        // Handle it (here: print), then acknowledge. An event redelivered after a crash
        // before the ack carries the same `id`: deduplicate on it.
        println!(
            "{} {} chat={} {}",
            event["id"].as_str().unwrap_or("?"),
            event["kind"].as_str().unwrap_or("?"),
            event["chat"].as_str().unwrap_or("-"),
            event["detail"]
        );
        message.double_ack().await?;
    }
    Ok(())
}
