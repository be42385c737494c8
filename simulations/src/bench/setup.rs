//! The benchmark's tenants, their WhatsApp numbers and knowledge, written straight to the
//! database through [`SqlStore`] (as the node's tests do); and the webhook bodies that load
//! them, built and signed before the clock starts.

use std::sync::Arc;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::HeaderValue;
use salesboy_actors::store::{AccessToken, NewKnowledge, NewTenant, NewWhatsAppNumber, Store};
use salesboy_node::store::SqlStore;
use salesboy_protocol::whatsapp::signature::sign;
use salesboy_protocol::{PhoneNumberId, TenantId};
use salesboy_testkit::webhooks;

use super::node::APP_SECRET;
use super::progress;

/// The FAQ every tenant gets: one document, one passage each.
const FAQ: [&str; 5] = [
    "We ship worldwide; delivery takes 3 to 5 business days and is free above 50 dollars.",
    "Returns are accepted within 30 days of delivery for a full refund, no questions asked.",
    "The shop is open Monday to Saturday from 9am to 7pm and on Sunday from 10am to 4pm.",
    "We accept credit cards, bank transfers and cash on delivery in the city centre.",
    "Prices include taxes; wholesale prices are available for orders of 100 units or more.",
];

/// What customers ask (each question finds one FAQ passage).
const QUESTIONS: [&str; 5] = [
    "Do you ship abroad and how long does delivery take?",
    "Can I return an item for a refund?",
    "What are your opening hours on Sunday?",
    "Which payment methods do you accept?",
    "Do prices include taxes?",
];

/// The `i`-th tenant's id.
pub fn tenant_id(i: usize) -> String {
    format!("bench-{i:06}")
}

/// The `i`-th tenant's phone number id (digits only).
pub fn phone_number_id(i: usize) -> String {
    format!("{}", 100_000_000_000_u64 + i as u64)
}

/// Writes tenants `0..count` with one WhatsApp number each and, with `knowledge`, the FAQ.
/// LLM configuration is left empty: the offline responder answers from retrieval.
pub async fn create_tenants(store: &SqlStore, count: usize, knowledge: bool) -> anyhow::Result<()> {
    let store = Arc::new(store.clone());
    let started = std::time::Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let store = Arc::clone(&store);
            async move { create_tenant(&*store, i, knowledge).await }
        })
        .buffer_unordered(8)
        .enumerate()
        .map(|(done, result)| {
            if (done + 1) % 10_000 == 0 {
                progress(format!("  {} of {count} tenants created", done + 1));
            }
            result
        })
        .try_collect::<()>()
        .await?;
    progress(format!(
        "{count} tenants created in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

async fn create_tenant(store: &dyn Store, i: usize, knowledge: bool) -> anyhow::Result<()> {
    let tenant = TenantId::new(tenant_id(i))?;
    store
        .upsert_tenant(&NewTenant::new(
            tenant.clone(),
            format!("Bench shop {i}"),
            1,
        ))
        .await
        .with_context(|| format!("creating tenant {tenant}"))?;
    store
        .upsert_whatsapp_number(&NewWhatsAppNumber {
            tenant: tenant.clone(),
            phone_number_id: PhoneNumberId::new(phone_number_id(i))?,
            waba_id: None,
            access_token: AccessToken::new(format!("token-{i}")),
        })
        .await
        .with_context(|| format!("adding tenant {tenant}'s number"))?;
    if knowledge {
        store
            .add_knowledge(&NewKnowledge {
                tenant,
                title: "FAQ".into(),
                chunks: FAQ.iter().map(|&c| c.to_owned()).collect(),
                created_ms: 1,
            })
            .await
            .context("adding knowledge")?;
    }
    Ok(())
}

/// One webhook delivery, built and signed.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The raw body.
    pub body: Vec<u8>,
    /// The `X-Hub-Signature-256` header.
    pub signature: HeaderValue,
    /// The customer (the reply's recipient).
    pub chat: usize,
}

/// How messages map to chats and tenants.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Tenants receiving messages.
    pub tenants: usize,
    /// Messages in the run.
    pub messages: usize,
    /// Messages per customer chat (1: every message its own chat).
    pub messages_per_chat: usize,
}

impl Layout {
    /// How many chats the run uses.
    pub fn chats(&self) -> usize {
        self.messages.div_ceil(self.messages_per_chat.max(1)).max(1)
    }

    /// The chat of message `i`: messages of one chat are spread evenly over the run, so
    /// the same customer writes again only after every other chat did.
    pub fn chat_of(&self, i: usize) -> usize {
        i % self.chats()
    }

    /// The tenant of chat `c`.
    pub fn tenant_of_chat(&self, chat: usize) -> usize {
        chat % self.tenants.max(1)
    }
}

/// The customer's WhatsApp id of chat `chat` in run `run` (digits).
pub fn chat_wa_id(run: u32, chat: usize) -> String {
    format!("{}{run:02}{chat:09}", 1)
}

/// The chat index back from a recipient built by [`chat_wa_id`] for `run`.
pub fn chat_index(run: u32, wa_id: &str) -> Option<usize> {
    let prefix = format!("1{run:02}");
    wa_id.strip_prefix(&prefix)?.parse().ok()
}

/// Builds and signs the run's deliveries: one inbound text message per request.
pub fn build_deliveries(run: u32, layout: &Layout) -> Vec<Delivery> {
    (0..layout.messages)
        .map(|i| {
            let chat = layout.chat_of(i);
            let tenant = layout.tenant_of_chat(chat);
            delivery(run, tenant, chat, &format!("wamid.bench.{run}.{i}"), i)
        })
        .collect()
}

/// One delivery: tenant `tenant`'s number, customer `chat` of run `run`.
pub fn delivery(run: u32, tenant: usize, chat: usize, wamid: &str, i: usize) -> Delivery {
    let body = webhooks::text_message(
        &phone_number_id(tenant),
        &chat_wa_id(run, chat),
        wamid,
        QUESTIONS[i % QUESTIONS.len()],
    )
    .to_string()
    .into_bytes();
    let signature = sign(APP_SECRET.as_bytes(), &body);
    Delivery {
        signature: HeaderValue::from_str(&signature).unwrap_or(HeaderValue::from_static("")),
        body,
        chat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_round_trip_and_spread() {
        assert_eq!(chat_index(3, &chat_wa_id(3, 12_345)), Some(12_345));
        assert_eq!(chat_index(4, &chat_wa_id(3, 12_345)), None);
        let layout = Layout {
            tenants: 3,
            messages: 10,
            messages_per_chat: 2,
        };
        assert_eq!(layout.chats(), 5);
        assert_eq!(layout.chat_of(0), layout.chat_of(5));
        assert_ne!(layout.chat_of(0), layout.chat_of(1));
        assert!(PhoneNumberId::new(phone_number_id(99_999)).is_ok());
    }
}
