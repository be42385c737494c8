//! WhatsApp addresses (JIDs) and our chat ids (docs/engines.md, "The adapter").
//!
//! - `<digits>@s.whatsapp.net` (a phone number) is chat `<digits>`;
//! - `<digits>@lid` (a LID, WhatsApp's privacy address) is the chat of its phone number when
//!   it is known (one conversation per customer, whichever address they write from), else
//!   chat `lid-<digits>`;
//! - anything else (groups, status broadcasts, newsletters, broadcast lists, bots…) is no
//!   chat of ours.
//!
//! [`Addresses`] remembers, per chat, the address the customer last wrote from, so replies
//! go where the customer wrote.

use std::time::Duration;

use salesboy_protocol::ChatId;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::{Jid, Server};

/// The prefix of the chat id of a LID whose phone number is not known.
pub const LID_PREFIX: &str = "lid-";

/// How many chats' last addresses are kept per client.
const ADDRESSES: u64 = 10_000;

/// How long an address is kept after it was last written from.
const ADDRESS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a JID names a customer, if it does: a phone number or a LID (without device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Customer {
    /// A phone number, digits.
    Phone(String),
    /// A LID, digits.
    Lid(String),
}

/// The customer a JID addresses: one-to-one chats with people only (not our server, not
/// groups, status, newsletters, broadcast lists or bots).
pub fn customer(jid: &Jid) -> Option<Customer> {
    let user = jid.user.as_str();
    if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) || jid.is_bot() || jid.is_psa()
    {
        return None;
    }
    match jid.server {
        Server::Pn => Some(Customer::Phone(user.to_owned())),
        Server::Lid => Some(Customer::Lid(user.to_owned())),
        _ => None,
    }
}

/// The chat id of a customer's address: its phone number when known (`phone`, digits, for a
/// LID), else `lid-<digits>` for a LID.
pub fn chat_id(customer: &Customer, phone: Option<&str>) -> Option<ChatId> {
    let text = match (customer, phone) {
        (Customer::Phone(digits), _) => digits.clone(),
        (Customer::Lid(_), Some(phone)) if is_digits(phone) => phone.to_owned(),
        (Customer::Lid(digits), _) => format!("{LID_PREFIX}{digits}"),
    };
    ChatId::new(text).ok()
}

/// The address a chat id stands for, when no address is remembered for it: a LID for
/// `lid-<digits>`, else a phone number. `None` for a chat id that is neither.
pub fn default_jid(chat: &ChatId) -> Option<Jid> {
    let text = chat.as_str();
    match text.strip_prefix(LID_PREFIX) {
        Some(lid) if is_digits(lid) => Some(Jid::lid(lid)),
        Some(_) => None,
        None if is_digits(text) => Some(Jid::pn(text)),
        None => None,
    }
}

/// Whether `text` is a non-empty run of ASCII digits.
pub fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Per chat, the address the customer last wrote from (bounded, forgotten after a week
/// unused).
#[derive(Clone)]
pub struct Addresses(moka::sync::Cache<ChatId, Jid>);

impl Addresses {
    /// An empty book.
    pub fn new() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(ADDRESSES)
                .time_to_idle(ADDRESS_TTL)
                .build(),
        )
    }

    /// The customer of `chat` wrote from `jid` (its device dropped).
    pub fn remember(&self, chat: &ChatId, jid: &Jid) {
        self.0.insert(chat.clone(), jid.to_non_ad());
    }

    /// Where to send to `chat`: the address the customer last wrote from, else the one the
    /// chat id stands for.
    pub fn resolve(&self, chat: &ChatId) -> Option<Jid> {
        self.0.get(chat).or_else(|| default_jid(chat))
    }
}

impl Default for Addresses {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(text: &str) -> Jid {
        text.parse().unwrap()
    }

    #[test]
    fn phone_numbers_and_lids_are_customers_nothing_else_is() {
        assert_eq!(
            customer(&jid("5511900000001@s.whatsapp.net")),
            Some(Customer::Phone("5511900000001".into()))
        );
        // a device of the number is the same customer
        assert_eq!(
            customer(&jid("5511900000001:3@s.whatsapp.net")),
            Some(Customer::Phone("5511900000001".into()))
        );
        assert_eq!(
            customer(&jid("123456789012345@lid")),
            Some(Customer::Lid("123456789012345".into()))
        );
        for other in [
            "120363098765432100@g.us",
            "status@broadcast",
            "1234567890@broadcast",
            "120363000000000001@newsletter",
            "0@s.whatsapp.net",
            "13135550002@s.whatsapp.net",
        ] {
            assert_eq!(customer(&jid(other)), None, "{other}");
        }
    }

    #[test]
    fn chat_ids_use_the_phone_number_when_known() {
        let phone = Customer::Phone("5511900000001".into());
        let lid = Customer::Lid("123456789012345".into());
        assert_eq!(chat_id(&phone, None).unwrap().as_str(), "5511900000001");
        assert_eq!(
            chat_id(&lid, Some("5511900000001")).unwrap().as_str(),
            "5511900000001"
        );
        assert_eq!(chat_id(&lid, None).unwrap().as_str(), "lid-123456789012345");
        // a phone number that is not one is not used
        assert_eq!(
            chat_id(&lid, Some("55+11")).unwrap().as_str(),
            "lid-123456789012345"
        );
    }

    #[test]
    fn chat_ids_map_back_to_addresses() {
        let chat = |text: &str| ChatId::new(text).unwrap();
        assert_eq!(
            default_jid(&chat("5511900000001")),
            Some(jid("5511900000001@s.whatsapp.net"))
        );
        assert_eq!(
            default_jid(&chat("lid-123456789012345")),
            Some(jid("123456789012345@lid"))
        );
        assert_eq!(default_jid(&chat("lid-abc")), None);
        assert_eq!(default_jid(&chat("alice")), None);
    }

    #[test]
    fn replies_go_to_the_address_the_customer_wrote_from() {
        let book = Addresses::new();
        let chat = ChatId::new("5511900000001").unwrap();
        assert_eq!(
            book.resolve(&chat),
            Some(jid("5511900000001@s.whatsapp.net"))
        );
        book.remember(&chat, &jid("123456789012345:2@lid"));
        assert_eq!(book.resolve(&chat), Some(jid("123456789012345@lid")));
        book.remember(&chat, &jid("5511900000001@s.whatsapp.net"));
        assert_eq!(
            book.resolve(&chat),
            Some(jid("5511900000001@s.whatsapp.net"))
        );
    }
}
