//! The traffic plan: every message a scenario sends, when and from whom, drawn before the
//! clock starts from the scenario's seed.
//!
//! Arrivals are Poisson per customer: the superposition of the customers' processes is one
//! Poisson process of the total rate whose arrivals pick a customer uniformly, which is how
//! they are drawn. An arrival is one message, or with probability `burst_share` a typing
//! burst of several messages `burst_gap_ms` apart. Campaign storms add one message from a
//! share of all customers, uniform over the storm's window.
//!
//! Every message starts with a tag, [`TAG_PREFIX`] and its number in hex, which the fake LLM
//! quotes in its answer: the ledger tells which messages a reply answered from the tags.

use std::time::Duration;

use salesboy_testkit::SplitMix64;

use super::spec::{Scenario, TrafficSpec};

/// The prefix of every message's tag.
pub const TAG_PREFIX: &str = "sbm";

/// Filler words (three letters or more, some of them in the default knowledge).
const WORDS: &[&str] = &[
    "hello",
    "price",
    "delivery",
    "open",
    "hours",
    "returns",
    "size",
    "stock",
    "please",
    "thanks",
    "when",
    "does",
    "shipping",
    "free",
    "today",
    "tomorrow",
    "order",
    "colour",
    "available",
    "discount",
    "store",
    "weekend",
    "payment",
    "card",
];

/// One planned message.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Its number (unique in the run).
    pub id: u64,
    /// When it is due, from the start of the traffic.
    pub at: Duration,
    /// The customer (global index) sending it.
    pub customer: usize,
    /// Its text, starting with its tag.
    pub text: String,
}

/// A message's tag: the prefix and its number in hex.
pub fn tag(id: u64) -> String {
    format!("{TAG_PREFIX}{id:x}")
}

/// The number of a tag, if it is one.
pub fn tag_id(tag: &str) -> Option<u64> {
    u64::from_str_radix(tag.strip_prefix(TAG_PREFIX)?, 16).ok()
}

/// The tags in a text, in order.
pub fn tags_in(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.starts_with(TAG_PREFIX))
        .filter_map(tag_id)
}

/// The customer's WhatsApp id (the chat): unique over the run.
pub fn customer_wa_id(customer: usize) -> String {
    format!("2{customer:011}")
}

/// Every message of the scenario, in time order.
pub fn plan(scenario: &Scenario) -> Vec<Planned> {
    let customers = scenario.tenants.count * scenario.tenants.customers_per_tenant;
    let traffic = &scenario.traffic;
    let mut rng = SplitMix64::new(scenario.seed ^ 0x7a3f_11c0);
    let mut arrivals: Vec<(f64, usize)> = Vec::new();
    let end = scenario.duration_secs;

    // Poisson arrivals over all customers.
    if traffic.rate > 0.0 {
        let mut t = 0.0;
        loop {
            t += -(1.0 - rng.next_f64()).ln() / traffic.rate;
            if t >= end {
                break;
            }
            let customer = pick(&mut rng, customers);
            arrivals.extend(burst(&mut rng, traffic, t, customer));
        }
    }
    // Campaign reply storms.
    for storm in &traffic.storms {
        for customer in 0..customers {
            if rng.next_f64() < storm.share {
                let t = storm.at_secs + rng.next_f64() * storm.duration_secs;
                if t < end {
                    arrivals.push((t, customer));
                }
            }
        }
    }
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
    arrivals
        .into_iter()
        .enumerate()
        .map(|(index, (t, customer))| {
            let id = index as u64;
            Planned {
                id,
                at: Duration::from_secs_f64(t),
                customer,
                text: text(&mut rng, traffic, id),
            }
        })
        .collect()
}

/// An arrival: one message, or a typing burst.
fn burst(
    rng: &mut SplitMix64,
    traffic: &TrafficSpec,
    t: f64,
    customer: usize,
) -> Vec<(f64, usize)> {
    let count = if traffic.burst_messages >= 2 && rng.next_f64() < traffic.burst_share {
        2 + pick(rng, traffic.burst_messages - 1)
    } else {
        1
    };
    let gap = traffic.burst_gap_ms as f64 / 1000.0;
    (0..count).map(|i| (t + gap * i as f64, customer)).collect()
}

/// A message: its tag, then filler words up to a size uniform in the scenario's range.
fn text(rng: &mut SplitMix64, traffic: &TrafficSpec, id: u64) -> String {
    let span = traffic.max_chars - traffic.min_chars;
    let size = traffic.min_chars + pick(rng, span + 1);
    let mut text = tag(id);
    while text.len() < size {
        text.push(' ');
        text.push_str(WORDS[pick(rng, WORDS.len())]);
    }
    // ASCII only: any byte index is a character boundary.
    text.truncate(size.max(tag(id).len()));
    text.trim_end().to_owned()
}

/// Uniform in `0..n` (`n` ≥ 1).
fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    ((rng.next_f64() * n as f64) as usize).min(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::spec::{StormSpec, test_scenario};

    fn scenario() -> Scenario {
        test_scenario(
            r#"
            name = "t"
            duration_secs = 100
            [cluster]
            nodes = 1
            [tenants]
            count = 10
            customers_per_tenant = 10
            [traffic]
            rate = 20
            burst_share = 0.5
            burst_messages = 4
            "#,
        )
        .expect("parses")
    }

    #[test]
    fn the_plan_is_seeded_ordered_and_tagged() {
        let scenario = scenario();
        let plan = plan(&scenario);
        assert_eq!(plan, super::plan(&scenario));
        // 2,000 arrivals expected, each 1 or (half of them) 2-4 messages.
        assert!((3_000..5_000).contains(&plan.len()), "{}", plan.len());
        assert!(plan.windows(2).all(|w| w[0].at <= w[1].at));
        for message in &plan {
            let tags: Vec<u64> = tags_in(&message.text).collect();
            assert_eq!(tags, vec![message.id]);
            assert!((19..=160).contains(&message.text.len()), "{}", message.text);
            assert!(message.customer < 100);
        }
    }

    #[test]
    fn storms_add_one_message_per_replying_customer() {
        let mut scenario = scenario();
        scenario.traffic.rate = 0.0;
        scenario.traffic.storms = vec![StormSpec {
            at_secs: 10.0,
            duration_secs: 5.0,
            share: 0.5,
        }];
        let plan = plan(&scenario);
        assert!((30..70).contains(&plan.len()), "{}", plan.len());
        assert!(
            plan.iter()
                .all(|m| (10.0..15.0).contains(&m.at.as_secs_f64()))
        );
    }
}
