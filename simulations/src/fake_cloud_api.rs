//! `salesboy-sim fake-cloud-api`: the quickstart's stand-in for Meta's Graph API, a
//! [`FakeWhatsApp`] that prints every message the gateway sends (docs/quickstart.md).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use salesboy_testkit::{FakeWhatsApp, FakeWhatsAppOptions};

/// Serves the fake Graph API on `addr` until Ctrl-C, printing every message the gateway sends.
pub async fn run(addr: SocketAddr) -> anyhow::Result<()> {
    salesboy_node::run::install_crypto_provider();
    let fake = FakeWhatsApp::try_start_on(addr, FakeWhatsAppOptions::default())
        .await
        .with_context(|| format!("listening on {addr}"))?;
    println!("fake WhatsApp Cloud API listening; start the gateway with");
    println!("  SALESBOY_WHATSAPP_API_BASE={}", fake.base_url());
    println!("messages the gateway sends appear below (Ctrl-C to stop)");
    let mut shown = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            sent = fake.wait_for_sent(shown + 1, Duration::from_secs(3600)) => {
                let Ok(sent) = sent else { continue };
                for message in &sent[shown..] {
                    println!("→ to {} ({}): {}", message.to, message.wamid, message.body);
                }
                shown = sent.len();
            }
        }
    }
}
