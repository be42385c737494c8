//! Knowledge documents split into passages, the retrieval units of the responder.
//!
//! [`passages`] is what the API stores: the document cut into sections at its headings,
//! each section's body packed by [`chunk`], every passage starting with its section's
//! heading (so a passage about "Delivery" says so even when its sentences do not), and each
//! passage after the first of a section repeating the end of the one before (at most
//! [`OVERLAP_CHARS`]), so a fact cut at a passage boundary is whole in one of them. No
//! passage is longer than [`MAX_CHARS`].
//!
//! [`chunk`] cuts a document into passages of about [`MIN_CHARS`]–[`MAX_CHARS`] characters,
//! preferring paragraph boundaries, then sentence boundaries, then word boundaries. A passage
//! never ends mid-word unless a single "word" is longer than a passage (a URL, a hash), and
//! never mid-character: lengths are counted in `char`s.

use std::collections::VecDeque;

/// A passage is closed once it holds at least this many characters and the next piece does
/// not fit.
pub const MIN_CHARS: usize = 500;

/// No passage is longer than this many characters.
pub const MAX_CHARS: usize = 800;

/// At most this many characters of a passage's end are repeated at the start of the next
/// passage of the same section.
pub const OVERLAP_CHARS: usize = 150;

/// A heading longer than this is cut (at a character boundary) before it prefixes passages.
pub const MAX_HEADING_CHARS: usize = 120;

/// A section of a document: its heading (if any) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Section {
    heading: Option<String>,
    body: String,
}

/// Splits a document into passages (see the module docs): sections at headings, each body
/// packed by [`chunk`] into passages of at most [`MAX_CHARS`] characters including the
/// heading line and the overlap. Whitespace-only input gives no passages; a heading with no
/// body is a passage of its own.
pub fn passages(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for section in sections(text) {
        let heading = section
            .heading
            .as_deref()
            .map(|h| h.chars().take(MAX_HEADING_CHARS).collect::<String>());
        let heading_chars = heading.as_ref().map_or(0, |h| h.chars().count() + 1);
        // The overlap and the space after it.
        let budget = MAX_CHARS - heading_chars - OVERLAP_CHARS - 1;
        let bodies = chunk_sized(&section.body, budget * 5 / 8, budget);
        if bodies.is_empty() {
            if let Some(heading) = heading {
                out.push(heading);
            }
            continue;
        }
        let mut previous: Option<String> = None;
        for body in bodies {
            let mut passage = String::new();
            if let Some(heading) = &heading {
                passage.push_str(heading);
                passage.push('\n');
            }
            if let Some(tail) = previous
                .as_deref()
                .map(overlap_tail)
                .filter(|t| !t.is_empty())
            {
                passage.push_str(&tail);
                passage.push(' ');
            }
            passage.push_str(&body);
            previous = Some(body);
            out.push(passage);
        }
    }
    out
}

/// The end of a passage repeated at the start of the next: its last whole sentences that
/// fit in [`OVERLAP_CHARS`], else its last whole words that fit; empty if not even one word
/// fits.
fn overlap_tail(passage: &str) -> String {
    let last_paragraph = passage.rsplit("\n\n").next().unwrap_or(passage);
    let mut kept: Vec<String> = Vec::new();
    let mut chars = 0;
    for sentence in sentences(last_paragraph).into_iter().rev() {
        let n = sentence.chars().count() + usize::from(!kept.is_empty());
        if chars + n > OVERLAP_CHARS {
            break;
        }
        chars += n;
        kept.push(sentence);
    }
    if kept.is_empty() {
        for word in last_paragraph.split_whitespace().rev() {
            let n = word.chars().count() + usize::from(!kept.is_empty());
            if chars + n > OVERLAP_CHARS {
                break;
            }
            chars += n;
            kept.push(word.to_owned());
        }
    }
    kept.reverse();
    kept.join(" ")
}

/// Whether a paragraph is a heading: a Markdown heading line (`# …`), or a single line of
/// at most [`MAX_HEADING_CHARS`] characters that does not end like a sentence (`.`, `!`,
/// `?`, `…`, `:`, `;`, `,`, `。`).
fn heading_of(paragraph: &str) -> Option<String> {
    let first = paragraph.lines().next()?.trim();
    if first.starts_with('#') {
        let text = first.trim_start_matches('#').trim();
        return (!text.is_empty()).then(|| text.to_owned());
    }
    let single_line = !paragraph.contains('\n');
    let short = first.chars().count() <= MAX_HEADING_CHARS;
    let ends_like_sentence = first.chars().last().is_some_and(|c| {
        matches!(
            c,
            '.' | '!' | '?' | '…' | ':' | ';' | ',' | '。' | '！' | '？'
        )
    });
    (single_line && short && !ends_like_sentence).then(|| first.to_owned())
}

/// The document's sections: a heading starts a new one; text before the first heading is
/// a section without a heading. A Markdown heading line followed by text in the same
/// paragraph heads that text.
fn sections(text: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut current = Section {
        heading: None,
        body: String::new(),
    };
    for paragraph in paragraphs(text) {
        let Some(heading) = heading_of(&paragraph) else {
            if !current.body.is_empty() {
                current.body.push_str("\n\n");
            }
            current.body.push_str(&paragraph);
            continue;
        };
        if current.heading.is_some() || !current.body.is_empty() {
            sections.push(std::mem::replace(
                &mut current,
                Section {
                    heading: None,
                    body: String::new(),
                },
            ));
        }
        current.heading = Some(heading);
        // A Markdown heading may be followed by its text without a blank line.
        if let Some((_, rest)) = paragraph.split_once('\n') {
            current.body.push_str(rest.trim());
        }
    }
    if current.heading.is_some() || !current.body.is_empty() {
        sections.push(current);
    }
    sections
}

/// How finely a piece of text was cut; each level splits into the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Paragraph,
    Sentence,
    Word,
    /// A fragment of a word longer than a passage; cannot be split further.
    Fragment,
}

impl Level {
    /// What joins two pieces of this level in a passage.
    fn separator(self) -> &'static str {
        match self {
            Level::Paragraph => "\n\n",
            Level::Sentence | Level::Word => " ",
            Level::Fragment => "",
        }
    }
}

/// A piece of text waiting to be placed in a passage.
#[derive(Debug)]
struct Piece {
    text: String,
    /// Length in characters.
    chars: usize,
    level: Level,
    /// What joins it to the text before it in the same passage.
    separator: &'static str,
}

impl Piece {
    fn new(text: String, level: Level, separator: &'static str) -> Self {
        let chars = text.chars().count();
        Self {
            text,
            chars,
            level,
            separator,
        }
    }

    /// The piece cut one level finer; the first part keeps the piece's own separator.
    /// `None` when it cannot be cut (a fragment, or a single sentence or word).
    fn split(&self, max: usize) -> Option<Vec<Piece>> {
        let (parts, level) = match self.level {
            Level::Paragraph => (sentences(&self.text), Level::Sentence),
            Level::Sentence => (
                self.text.split_whitespace().map(str::to_owned).collect(),
                Level::Word,
            ),
            Level::Word => (fragments(&self.text, max), Level::Fragment),
            Level::Fragment => return None,
        };
        if parts.len() < 2 {
            // A paragraph of one sentence is cut into words, a sentence of one word into
            // fragments: descend until something splits.
            let finer = Piece::new(self.text.clone(), level, self.separator);
            return finer.split(max);
        }
        let pieces = parts
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let separator = if i == 0 {
                    self.separator
                } else {
                    level.separator()
                };
                Piece::new(text, level, separator)
            })
            .collect();
        Some(pieces)
    }
}

/// Splits `text` into passages of about [`MIN_CHARS`]–[`MAX_CHARS`] characters (see the module
/// docs). Passages are trimmed; whitespace-only input gives no passages. Paragraphs (separated
/// by blank lines) are kept whole when they fit, sentences and words likewise; a passage that
/// is still short when the next paragraph does not fit takes that paragraph's first sentences
/// (or words), so passages are of comparable size.
pub fn chunk(text: &str) -> Vec<String> {
    chunk_sized(text, MIN_CHARS, MAX_CHARS)
}

/// [`chunk`] with other bounds: passages of about `min`–`max` characters.
fn chunk_sized(text: &str, min: usize, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut queue: VecDeque<Piece> = paragraphs(text)
        .into_iter()
        .map(|p| Piece::new(p, Level::Paragraph, Level::Paragraph.separator()))
        .collect();
    let mut passages = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    while let Some(piece) = queue.pop_front() {
        let joined = if current.is_empty() {
            piece.chars
        } else {
            current_chars + piece.separator.chars().count() + piece.chars
        };
        if joined <= max {
            if !current.is_empty() {
                current.push_str(piece.separator);
            }
            current.push_str(&piece.text);
            current_chars = joined;
            continue;
        }
        // It does not fit. Cut it finer when the passage is still short (to fill it) or when
        // the piece alone is too long for any passage.
        let needs_cut = current_chars < min || piece.chars > max;
        if needs_cut && let Some(parts) = piece.split(max) {
            for part in parts.into_iter().rev() {
                queue.push_front(part);
            }
            continue;
        }
        if current.is_empty() {
            // Only an unsplittable piece longer than a passage gets here, and fragments are
            // never longer: kept whole rather than looping.
            passages.push(piece.text);
            continue;
        }
        passages.push(std::mem::take(&mut current));
        current_chars = 0;
        queue.push_front(piece);
    }
    if !current.is_empty() {
        passages.push(current);
    }
    passages
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Paragraphs: runs of non-blank lines, each line trimmed, joined by `\n`.
fn paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join("\n"));
    }
    paragraphs
}

/// Sentences: a sentence ends after `.`, `!`, `?` or `…` (and any closing quotes or
/// brackets) followed by whitespace, or right after a full-width terminator (`。！？`), which
/// scripts without spaces use.
fn sentences(paragraph: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let mut chars = paragraph.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = match c {
            '。' | '！' | '？' => Some(i + c.len_utf8()),
            '.' | '!' | '?' | '…' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, closing)) = chars.peek() {
                    if matches!(closing, '"' | '\'' | ')' | ']' | '”' | '’' | '»') {
                        end = j + closing.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                match chars.peek() {
                    Some(&(_, next)) if next.is_whitespace() => Some(end),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(end) = end {
            push_trimmed(&mut sentences, &paragraph[start..end]);
            start = end;
        }
    }
    push_trimmed(&mut sentences, &paragraph[start..]);
    sentences
}

fn push_trimmed(out: &mut Vec<String>, text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        out.push(text.to_owned());
    }
}

/// A word cut into fragments of at most `max` characters, at character boundaries.
fn fragments(word: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    chars
        .chunks(max.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    /// Every passage is non-empty, trimmed and at most MAX_CHARS, and no word is lost,
    /// added or cut.
    fn assert_well_formed(text: &str, passages: &[String]) {
        for p in passages {
            assert!(!p.is_empty());
            assert_eq!(p.trim(), p, "passage not trimmed: {p:?}");
            assert!(chars(p) <= MAX_CHARS, "{} chars: {p:?}", chars(p));
        }
        let rejoined: Vec<&str> = passages.iter().flat_map(|p| words(p)).collect();
        assert_eq!(rejoined, words(text));
    }

    fn sentence(i: usize) -> String {
        format!("Sentence number {i} tells the customer about our delivery and returns policy.")
    }

    #[test]
    fn empty_and_blank_text_give_no_passages() {
        assert!(chunk("").is_empty());
        assert!(chunk("  \n\n \t \n").is_empty());
    }

    #[test]
    fn short_text_is_one_trimmed_passage() {
        assert_eq!(
            chunk("\n  We open at 9am.\nWe close at 6pm.  \n\n"),
            ["We open at 9am.\nWe close at 6pm."]
        );
    }

    #[test]
    fn paragraphs_are_packed_between_min_and_max() {
        let paragraphs: Vec<String> = (0..30)
            .map(|p| {
                (0..3)
                    .map(|s| sentence(p * 3 + s))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let text = paragraphs.join("\n\n");
        let passages = chunk(&text);
        assert_well_formed(&text, &passages);
        assert!(passages.len() > 5, "{}", passages.len());
        for p in &passages[..passages.len() - 1] {
            assert!(chars(p) >= MIN_CHARS, "{} chars: {p:?}", chars(p));
        }
        // Paragraph boundaries are kept where a passage breaks between paragraphs.
        assert!(passages[0].contains("\n\n"), "{:?}", passages[0]);
    }

    #[test]
    fn a_huge_paragraph_is_split_at_sentence_ends() {
        let text = (0..40).map(sentence).collect::<Vec<_>>().join(" ");
        let passages = chunk(&text);
        assert_well_formed(&text, &passages);
        assert!(passages.len() >= 4, "{}", passages.len());
        for p in &passages {
            assert!(p.starts_with("Sentence number"), "{p:?}");
            assert!(p.ends_with("policy."), "{p:?}");
        }
    }

    #[test]
    fn a_huge_sentence_is_split_between_words() {
        let text = (0..400)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let passages = chunk(&text);
        assert_well_formed(&text, &passages);
        assert!(passages.len() >= 3);
        for p in &passages[..passages.len() - 1] {
            assert!(chars(p) > MAX_CHARS - 10, "{} chars", chars(p));
        }
    }

    #[test]
    fn a_word_longer_than_a_passage_is_cut_at_character_boundaries() {
        let word = "é".repeat(2_000);
        let passages = chunk(&format!("see {word} there"));
        assert!(passages.iter().all(|p| chars(p) <= MAX_CHARS));
        assert_eq!(
            passages.concat().replace(' ', ""),
            format!("see{word}there")
        );
    }

    #[test]
    fn non_ascii_text_is_measured_in_characters() {
        let cyrillic =
            "Доставка по всей России занимает от трёх до пяти рабочих дней, оплата при получении. ";
        let text = cyrillic.repeat(40);
        let passages = chunk(&text);
        assert_well_formed(&text, &passages);
        for p in &passages {
            // ~85 characters per sentence but ~150 bytes: measured in bytes, passages would
            // hold half as much.
            assert!(chars(p) <= MAX_CHARS);
            assert!(p.ends_with("получении."), "{p:?}");
        }
        assert!(chars(&passages[0]) >= MIN_CHARS);
    }

    #[test]
    fn full_width_terminators_end_sentences_without_spaces() {
        let text = "配送は全国で三日から五日かかります。お支払いは代金引換です。".repeat(30);
        let passages = chunk(&text);
        assert!(passages.len() > 1);
        for p in &passages {
            assert!(chars(p) <= MAX_CHARS);
            assert!(p.ends_with('。'), "{p:?}");
        }
        assert_eq!(passages.concat().replace(' ', ""), text);
    }

    #[test]
    fn sentences_keep_their_closing_quotes() {
        assert_eq!(
            sentences("He said \"yes.\" Then left! Really? ok"),
            ["He said \"yes.\"", "Then left!", "Really?", "ok"]
        );
        assert_eq!(sentences("Version 1.5 is out."), ["Version 1.5 is out."]);
    }

    fn delivery_paragraph(i: usize) -> String {
        format!(
            "Rule {i}: parcels ship across Nigeria within three working days. \
             Orders above fifty thousand naira ship free of charge. \
             Every parcel is tracked and insured until it reaches the customer."
        )
    }

    #[test]
    fn headings_start_every_passage_of_their_section() {
        let body: Vec<String> = (0..12).map(delivery_paragraph).collect();
        let text = format!(
            "# Delivery\n{}\n\nOpening hours\n\nWe open at 9am and close at 6pm.",
            body.join("\n\n")
        );
        let passages = passages(&text);
        assert!(passages.len() >= 3, "{passages:#?}");
        let (last, delivery) = passages.split_last().expect("passages");
        for p in delivery {
            assert!(p.starts_with("Delivery\n"), "{p:?}");
            assert!(chars(p) <= MAX_CHARS, "{} chars", chars(p));
        }
        assert_eq!(last, "Opening hours\nWe open at 9am and close at 6pm.");
    }

    #[test]
    fn consecutive_passages_overlap() {
        let text = (0..40).map(sentence).collect::<Vec<_>>().join(" ");
        let passages = passages(&text);
        assert!(passages.len() >= 3);
        for pair in passages.windows(2) {
            let (first, second) = (&pair[0], &pair[1]);
            // The second starts with the first's last sentence.
            let last_sentence = sentences(first).pop().expect("a sentence");
            assert!(second.starts_with(&last_sentence), "{first:?} / {second:?}");
            assert!(chars(second) <= MAX_CHARS);
        }
        // Nothing is lost: every sentence is in some passage.
        for i in 0..40 {
            assert!(passages.iter().any(|p| p.contains(&sentence(i))), "{i}");
        }
    }

    #[test]
    fn sizes_stay_bounded_with_long_headings_and_words() {
        let heading = format!("# {}", "Shipping ".repeat(40));
        let text = format!("{heading}\n{}", "x".repeat(3_000));
        let passages = passages(&text);
        assert!(passages.len() >= 4);
        for p in &passages {
            assert!(chars(p) <= MAX_CHARS, "{} chars", chars(p));
            assert!(p.starts_with("Shipping"), "{p:?}");
        }
    }

    #[test]
    fn headings_are_recognised_conservatively() {
        assert_eq!(heading_of("## Returns"), Some("Returns".to_owned()));
        assert_eq!(
            heading_of("Payment methods"),
            Some("Payment methods".to_owned())
        );
        assert_eq!(heading_of("We accept cards."), None);
        assert_eq!(heading_of("Contact us:"), None);
        assert_eq!(heading_of("line one\nline two"), None);
        assert!(passages("").is_empty());
        assert_eq!(passages("# Only a heading"), ["Only a heading"]);
        assert_eq!(
            passages("Intro text.\n\n# FAQ\n\nAsk us anything."),
            ["Intro text.", "FAQ\nAsk us anything."]
        );
    }
}
