//! The rules both bus implementations apply to their input, and NATS subject matching.
//!
//! The rules are a little stricter than NATS's, so what passes here is valid on every NATS
//! server and the in-process bus behaves the same:
//!
//! - a subject is dot-separated non-empty tokens without white space or control characters;
//!   a subject published to contains no `*` or `>` at all; in a subscription, `*` and `>`
//!   are whole tokens and `>` comes last;
//! - a queue group is non-empty, without white space or control characters;
//! - a header name is printable ASCII without `:`; a value has no line break;
//! - a bucket name is letters, digits, `_` and `-`;
//! - a KV key is tokens of letters, digits and `-/_=`, joined by dots; a watch pattern may
//!   also use `*` and a final `>` tokens.

use super::{BusError, Headers, KV_HEADER_ROOM, KvError, MAX_KV_HISTORY};

/// How much of a rejected input an error message quotes.
const QUOTED_CHARS: usize = 64;

fn quoted(input: &str) -> String {
    input.chars().take(QUOTED_CHARS).collect()
}

fn is_token_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && c != '.'
}

/// A subject messages can be published or sent to.
pub(crate) fn subject(subject: &str) -> Result<(), BusError> {
    let valid = !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| is_token_char(c) && c != '*' && c != '>')
        });
    if valid {
        Ok(())
    } else {
        Err(BusError::InvalidSubject(quoted(subject)))
    }
}

/// A subject or wildcard that can be subscribed to.
pub(crate) fn filter(filter: &str) -> Result<(), BusError> {
    if filter_tokens_valid(filter, is_token_char) {
        Ok(())
    } else {
        Err(BusError::InvalidSubject(quoted(filter)))
    }
}

/// Whether `filter` is dot-separated tokens, each a wildcard (`*`, or `>` last) or made of
/// characters `literal` accepts, none of them `*` or `>`.
fn filter_tokens_valid(filter: &str, literal: impl Fn(char) -> bool) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut tokens = filter.split('.').peekable();
    while let Some(token) = tokens.next() {
        let valid = match token {
            "*" => true,
            ">" => tokens.peek().is_none(),
            _ => !token.is_empty() && token.chars().all(|c| literal(c) && c != '*' && c != '>'),
        };
        if !valid {
            return false;
        }
    }
    true
}

/// Whether `subject` (a valid published subject) matches `filter` (a valid subscription).
pub(crate) fn matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in filter.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(s)) if literal == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// A queue group name.
pub(crate) fn queue_group(group: &str) -> Result<(), BusError> {
    if !group.is_empty() && group.chars().all(|c| !c.is_whitespace() && !c.is_control()) {
        Ok(())
    } else {
        Err(BusError::InvalidQueueGroup(quoted(group)))
    }
}

/// Every header of a message.
pub(crate) fn headers(headers: &Headers) -> Result<(), BusError> {
    for (name, value) in headers.iter() {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_graphic() && c != ':') {
            return Err(BusError::InvalidHeader(quoted(name)));
        }
        if value.contains(['\r', '\n']) {
            return Err(BusError::InvalidHeader(quoted(name)));
        }
    }
    Ok(())
}

/// A message's size (payload and encoded headers) against the bus's limit.
pub(crate) fn size(headers: &Headers, payload: usize, max: usize) -> Result<(), BusError> {
    let size = headers.wire_len() + payload;
    if size > max {
        Err(BusError::PayloadTooLarge { size, max })
    } else {
        Ok(())
    }
}

/// Everything about a message about to be sent to `subject`.
pub(crate) fn outgoing(
    to: &str,
    message_headers: &Headers,
    payload: usize,
    max: usize,
) -> Result<(), BusError> {
    subject(to)?;
    headers(message_headers)?;
    size(message_headers, payload, max)
}

/// A bucket name and history.
pub(crate) fn bucket(bucket: &str, history: u8) -> Result<(), BusError> {
    let valid = !bucket.is_empty()
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(BusError::InvalidBucket(quoted(bucket)));
    }
    if history == 0 || history > MAX_KV_HISTORY {
        return Err(BusError::InvalidHistory(history));
    }
    Ok(())
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=')
}

/// A KV key.
pub(crate) fn key(key: &str) -> Result<(), KvError> {
    let valid = !key.is_empty()
        && key
            .split('.')
            .all(|token| !token.is_empty() && token.chars().all(is_key_char));
    if valid {
        Ok(())
    } else {
        Err(KvError::InvalidKey(quoted(key)))
    }
}

/// A KV key pattern to watch.
pub(crate) fn key_filter(filter: &str) -> Result<(), KvError> {
    if filter_tokens_valid(filter, is_key_char) {
        Ok(())
    } else {
        Err(KvError::InvalidKey(quoted(filter)))
    }
}

/// A KV value's size against the bus's limit (minus room for JetStream's headers).
pub(crate) fn value(value: usize, max_payload: usize) -> Result<(), KvError> {
    let max = max_payload.saturating_sub(KV_HEADER_ROOM);
    if value > max {
        Err(BusError::PayloadTooLarge { size: value, max }.into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_subjects() {
        for good in ["a", "sb.v1.t.acme.session", "_INBOX.local.7", "a-b.c_d.é"] {
            assert_eq!(subject(good), Ok(()), "{good}");
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\nb", "a.*", "a.>", "*", "a*b", "a.b>",
        ] {
            assert!(
                matches!(subject(bad), Err(BusError::InvalidSubject(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn subscription_filters() {
        for good in ["a", "a.*", "*.b", "a.>", ">", "*.*.>", "sb.v1.t.acme.>"] {
            assert_eq!(filter(good), Ok(()), "{good}");
        }
        for bad in [
            "", "a.>.b", ">.a", "a.b*", "a*.b", "a..b", "a.", "a b.>", "a.>>",
        ] {
            assert!(
                matches!(filter(bad), Err(BusError::InvalidSubject(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wildcard_matching() {
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("*.b", "a.b", true),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            ("a.>", "b.c", false),
            (">", "a", true),
            (">", "a.b.c", true),
            ("a.*.c.>", "a.x.c.d", true),
            ("a.*.c.>", "a.x.c", false),
        ];
        for (f, s, expected) in cases {
            assert_eq!(matches(f, s), expected, "{f} ~ {s}");
        }
    }

    #[test]
    fn queue_groups_headers_and_sizes() {
        assert_eq!(queue_group("workers"), Ok(()));
        assert!(queue_group("").is_err());
        assert!(queue_group("a b").is_err());

        assert_eq!(headers(&Headers::new().with("Sb-Codec", "json")), Ok(()));
        for bad in [
            Headers::new().with("", "v"),
            Headers::new().with("a b", "v"),
            Headers::new().with("a:b", "v"),
            Headers::new().with("é", "v"),
            Headers::new().with("a", "line\nbreak"),
            Headers::new().with("a", "cr\r"),
        ] {
            assert!(
                matches!(headers(&bad), Err(BusError::InvalidHeader(_))),
                "{bad:?}"
            );
        }

        let h = Headers::new().with("Ab", "cd");
        // "NATS/1.0\r\n" + "Ab: cd\r\n" + "\r\n"
        assert_eq!(h.wire_len(), 10 + 8 + 2);
        assert_eq!(Headers::new().wire_len(), 0);
        assert_eq!(size(&h, 80, 100), Ok(()));
        assert_eq!(
            size(&h, 81, 100),
            Err(BusError::PayloadTooLarge {
                size: 101,
                max: 100
            })
        );
    }

    #[test]
    fn buckets_keys_and_key_filters() {
        assert_eq!(bucket("sb_nodes", 1), Ok(()));
        assert_eq!(bucket("a-b", MAX_KV_HISTORY), Ok(()));
        assert!(matches!(bucket("a.b", 1), Err(BusError::InvalidBucket(_))));
        assert!(matches!(bucket("", 1), Err(BusError::InvalidBucket(_))));
        assert_eq!(bucket("a", 0), Err(BusError::InvalidHistory(0)));
        assert_eq!(bucket("a", 65), Err(BusError::InvalidHistory(65)));

        for good in ["acme", "node.n-1", "a/b=c_d"] {
            assert_eq!(key(good), Ok(()), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", ">", "é"] {
            assert!(matches!(key(bad), Err(KvError::InvalidKey(_))), "{bad:?}");
        }
        for good in [">", "node.>", "node.*", "a.*.c"] {
            assert_eq!(key_filter(good), Ok(()), "{good}");
        }
        for bad in ["", "a.>.b", "a b", "a*"] {
            assert!(
                matches!(key_filter(bad), Err(KvError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejected_input_is_quoted_briefly() {
        let long = " ".repeat(10_000);
        let Err(BusError::InvalidSubject(quoted)) = subject(&long) else {
            panic!("a blank subject must be refused");
        };
        assert_eq!(quoted.len(), QUOTED_CHARS);
    }
}
