//! Prompt assembly and the offline answer (no provider configured, or none answered).

use crate::ports::{Prompt, Turn};

/// House rules appended to every tenant's system prompt.
pub const HOUSE_RULES: &str = "You are a helpful sales assistant answering customers on WhatsApp. \
Answer briefly and politely, in the customer's language, using only the business information \
provided. If the information does not answer the question, say that a person will get back to \
them soon. Never invent prices, stock or policies.";

/// The polite hand-off when nothing in the knowledge base fits.
pub const HANDOFF_REPLY: &str =
    "Thanks for your message! A person from our team will get back to you shortly.";

/// The longest reply we send (WhatsApp allows 4096 characters in a text message).
pub const MAX_REPLY_CHARS: usize = 4000;

/// Builds the prompt for one turn.
pub fn build(
    system_prompt: Option<&str>,
    passages: Vec<String>,
    history: Vec<Turn>,
    question: String,
) -> Prompt {
    let system = match system_prompt.map(str::trim).filter(|s| !s.is_empty()) {
        Some(own) => format!("{own}\n\n{HOUSE_RULES}"),
        None => HOUSE_RULES.to_owned(),
    };
    Prompt {
        system,
        passages,
        history,
        question,
    }
}

/// A passage as the prompt shows it: `[passage ID, "TITLE"] text`, so the model (and
/// whoever reads the prompt) can tell which passage an answer came from.
pub fn cited(hit: &crate::store::KnowledgeHit) -> String {
    format!(
        "[passage {}, \"{}\"] {}",
        hit.chunk_id,
        hit.document_title,
        hit.text.trim()
    )
}

/// The answer of the offline responder: from the best passage, the paragraph that shares
/// the most words with the question (the whole passage when none does), or the hand-off.
pub fn offline_answer(passages: &[String], question: &str) -> String {
    match passages.first().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        Some(best) => truncate(best_paragraph(best, question), MAX_REPLY_CHARS),
        None => HANDOFF_REPLY.to_owned(),
    }
}

/// The paragraph of `passage` that matches most of the question's words (a word matches a
/// paragraph word it starts: "open" matches "opens"); the passage itself on no match.
fn best_paragraph<'a>(passage: &'a str, question: &str) -> &'a str {
    let words: Vec<String> = lowercase_words(question)
        .filter(|w| w.chars().count() >= 3)
        .collect();
    let score = |paragraph: &str| {
        let own: Vec<String> = lowercase_words(paragraph).collect();
        words
            .iter()
            .filter(|w| own.iter().any(|o| o.starts_with(w.as_str())))
            .count()
    };
    passage
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| (score(p), p))
        .fold((0, passage), |best, candidate| {
            if candidate.0 > best.0 {
                candidate
            } else {
                best
            }
        })
        .1
}

fn lowercase_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Cuts a reply to at most `max` characters, on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_answers_with_the_best_passage_or_hands_off() {
        assert_eq!(
            offline_answer(&["We open at 9.".into(), "other".into()], "open?"),
            "We open at 9."
        );
        assert_eq!(offline_answer(&[], "open?"), HANDOFF_REPLY);
        assert_eq!(offline_answer(&["  ".into()], "open?"), HANDOFF_REPLY);
    }

    #[test]
    fn offline_answers_with_the_paragraph_that_fits_the_question() {
        let faq = "Opening hours\n\nOur shop opens at 9am, Monday to Saturday.\n\nReturns are free within 30 days.";
        assert_eq!(
            offline_answer(&[faq.into()], "When do you open on Saturday?"),
            "Our shop opens at 9am, Monday to Saturday."
        );
        assert_eq!(
            offline_answer(&[faq.into()], "can I return shoes?"),
            "Returns are free within 30 days."
        );
        assert_eq!(
            offline_answer(&[faq.into()], "xyz"),
            faq,
            "no paragraph fits: the whole passage"
        );
    }

    #[test]
    fn system_prompt_keeps_the_house_rules() {
        let prompt = build(Some("We sell shoes."), vec![], vec![], "hi".into());
        assert!(prompt.system.starts_with("We sell shoes."));
        assert!(prompt.system.ends_with(HOUSE_RULES));
        assert_eq!(build(None, vec![], vec![], "hi".into()).system, HOUSE_RULES);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
