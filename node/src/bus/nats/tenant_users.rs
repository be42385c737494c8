//! A tenant's NATS user: what it may publish and subscribe to, written as a nats-server
//! `users` entry ([`TenantPermissions::user_entry`], printed by `salesboy nats-permissions`),
//! and the durable consumer it reads its events from ([`ensure_events_consumer`]).
//!
//! The user may publish its own commands (`sb.v1.api.t.<tenant>.>`) and, for JetStream,
//! only: read the state of its events consumer, pull from it, and ack its messages. It may
//! subscribe to its own events (`sb.v1.evt.t.<tenant>.>`, live) and to its own inboxes
//! (`_INBOX.<tenant>.>`: its client sets that inbox prefix, so no tenant can read the
//! replies another asked for). It cannot create consumers: on nats-server 2.9 a tenant that
//! could would also be able to create unbounded numbers of them; the operator creates the
//! one it reads from, `tenant_<tenant>` on `SB_EVENTS` filtered to its events, which works
//! the same on every server version. See `docs/bus.md`, "Tenant credentials".

use async_nats::jetstream::{self, consumer};
use salesboy_protocol::TenantId;
use salesboy_protocol::subjects::{
    EVENTS_STREAM, api_tenant_all, js_consumer_acks, js_consumer_info, js_consumer_next,
    tenant_events, tenant_events_consumer, tenant_inbox_prefix,
};

/// What a tenant's NATS user may publish and subscribe to (allow lists; everything else is
/// denied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPermissions {
    /// The tenant.
    pub tenant: TenantId,
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// Why a user entry could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserEntryError {
    /// The user name or password holds a character the entry cannot carry as written.
    #[error("{field}: use letters, digits and {allowed} only")]
    Unquotable {
        /// `user` or `password`.
        field: &'static str,
        /// The punctuation allowed.
        allowed: &'static str,
    },
}

/// Punctuation allowed in user names and passwords of an entry (no quotes, backslashes or
/// white space, which the server's config parser would read differently; `$` for bcrypt
/// hashes, which the server reads as such inside quotes).
const ALLOWED_PUNCTUATION: &str = "-_.@+=:/!%*$";

impl TenantPermissions {
    /// The permissions of `tenant`'s user.
    pub fn of(tenant: &TenantId) -> Self {
        let consumer = tenant_events_consumer(tenant);
        Self {
            tenant: tenant.clone(),
            publish: vec![
                api_tenant_all(tenant),
                js_consumer_info(EVENTS_STREAM, &consumer),
                js_consumer_next(EVENTS_STREAM, &consumer),
                js_consumer_acks(EVENTS_STREAM, &consumer),
            ],
            subscribe: vec![
                tenant_events(tenant),
                format!("{}.>", tenant_inbox_prefix(tenant)),
            ],
        }
    }

    /// The nats-server configuration of the user: one entry of a `users` list (of an
    /// account, or of `authorization`), commented.
    pub fn user_entry(&self, user: &str, password: &str) -> Result<String, UserEntryError> {
        check_unquoted("user", user)?;
        check_unquoted("password", password)?;
        let tenant = &self.tenant;
        let list = |subjects: &[String]| {
            subjects
                .iter()
                .map(|subject| format!("        \"{subject}\""))
                .collect::<Vec<_>>()
                .join(",\n")
        };
        Ok(format!(
            "# tenant {tenant}: its own commands and events only \
             (salesboy nats-permissions --tenant {tenant})\n\
             # its client must use the inbox prefix {inbox}; its events consumer is \
             {consumer} on {EVENTS_STREAM}\n\
             {{\n  \
               user: \"{user}\"\n  \
               password: \"{password}\"\n  \
               permissions: {{\n    \
                 publish: {{\n      \
                   allow: [\n{publish}\n      ]\n    \
                 }}\n    \
                 subscribe: {{\n      \
                   allow: [\n{subscribe}\n      ]\n    \
                 }}\n  \
               }}\n\
             }}\n",
            inbox = tenant_inbox_prefix(tenant),
            consumer = tenant_events_consumer(tenant),
            publish = list(&self.publish),
            subscribe = list(&self.subscribe),
        ))
    }
}

fn check_unquoted(field: &'static str, value: &str) -> Result<(), UserEntryError> {
    let fine = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ALLOWED_PUNCTUATION.contains(c));
    if fine {
        Ok(())
    } else {
        Err(UserEntryError::Unquotable {
            field,
            allowed: ALLOWED_PUNCTUATION,
        })
    }
}

/// Why the events consumer of a tenant could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EventsConsumerError {
    /// The events stream does not exist (yet).
    #[error("the events stream {EVENTS_STREAM} does not exist: {0}")]
    NoStream(String),
    /// JetStream refused or did not answer.
    #[error("creating the events consumer {consumer}: {reason}")]
    JetStream {
        /// The consumer.
        consumer: String,
        /// Why.
        reason: String,
    },
}

/// Creates (or keeps, when it exists with the same configuration) the durable pull consumer
/// `tenant_<tenant>` on `SB_EVENTS`, filtered to the tenant's events, acks explicit, from
/// the first event kept. Run it as a user allowed to manage consumers (the nodes' user).
pub async fn ensure_events_consumer(
    client: &async_nats::Client,
    tenant: &TenantId,
) -> Result<(), EventsConsumerError> {
    let name = tenant_events_consumer(tenant);
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|e| EventsConsumerError::NoStream(e.to_string()))?;
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!(
            "events of tenant {tenant}, read by its own nats user"
        )),
        filter_subject: tenant_events(tenant),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| EventsConsumerError::JetStream {
            consumer: name,
            reason: e.to_string(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_reaches_its_own_subjects_only() {
        let acme = TenantId::new("acme").unwrap();
        let permissions = TenantPermissions::of(&acme);
        assert_eq!(
            permissions.publish,
            [
                "sb.v1.api.t.acme.>",
                "$JS.API.CONSUMER.INFO.SB_EVENTS.tenant_acme",
                "$JS.API.CONSUMER.MSG.NEXT.SB_EVENTS.tenant_acme",
                "$JS.ACK.SB_EVENTS.tenant_acme.>",
            ]
        );
        assert_eq!(
            permissions.subscribe,
            ["sb.v1.evt.t.acme.>", "_INBOX.acme.>"]
        );
    }

    #[test]
    fn the_entry_quotes_every_subject_and_refuses_what_it_cannot_quote() {
        let acme = TenantId::new("acme").unwrap();
        let entry = TenantPermissions::of(&acme)
            .user_entry("acme", "s3cret-pw")
            .unwrap();
        assert!(entry.contains("user: \"acme\""), "{entry}");
        assert!(entry.contains("password: \"s3cret-pw\""), "{entry}");
        assert!(
            entry.contains("\"$JS.API.CONSUMER.MSG.NEXT.SB_EVENTS.tenant_acme\""),
            "{entry}"
        );
        for bad in ["", "a\"b", "a b", "a\\b", "a\nb"] {
            assert!(
                TenantPermissions::of(&acme).user_entry(bad, "pw").is_err(),
                "{bad:?}"
            );
            assert!(
                TenantPermissions::of(&acme).user_entry("u", bad).is_err(),
                "{bad:?}"
            );
        }
    }
}
