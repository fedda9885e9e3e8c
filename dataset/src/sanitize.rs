//! Clean-up of Magpie instructions: a pre-query template makes the model write what a user would, and small models
//! often dress it as "Task: ..." or run on into their own "Answer: ...".

/// Label words stripped from the start of an instruction when followed by ':' (or as a markdown heading).
const LABELS: &[&str] = &[
    "task",
    "tasks",
    "instruction",
    "instructions",
    "question",
    "q",
    "user",
    "human",
    "prompt",
    "query",
    "request",
    "problem",
    "input",
];

/// Where the model starts answering its own question; lowercase, compared ASCII-case-insensitively.
const ANSWER_MARKERS: &[&str] = &["answer:", "answers:", "a:", "response:", "solution:"];

/// Chat-template control tokens of the families Aviary runs; an instruction containing one means the model
/// wrote past its turn, and such text would corrupt the template when the row is used for training.
pub const TEMPLATE_TOKENS: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|begin_of_text|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<bos>",
    "<eos>",
    "<|endoftext|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "[INST]",
    "[/INST]",
    "</s>",
];

/// Strips leading labels ("Task:", "Question 1:", "## Task", "**Task:**", repeated), cuts at the first answer
/// marker ("Answer:", "A:", "Response:", "Solution:") and removes surrounding matching quotes.
pub fn sanitize_instruction(s: &str) -> String {
    let s = strip_decorations(s);
    let s = cut_at_answer(s);
    strip_decorations(s).to_owned()
}

/// The first line of the text: Magpie's stop-at-newline keeps the instruction's first line, and models often
/// open their turn with a blank line, so leading whitespace is skipped rather than yielding "".
pub fn cut_at_newline(s: &str) -> &str {
    let t = s.trim_start();
    match t.find('\n') {
        Some(i) => t[..i].trim_end_matches('\r'),
        None => t,
    }
}

pub fn has_template_tokens(s: &str) -> bool {
    TEMPLATE_TOKENS.iter().any(|t| s.contains(t))
}

/// Labels and quotes can nest either way round ("\"Task: ...\"", "Task: \"...\""), so alternate until stable.
fn strip_decorations(mut s: &str) -> &str {
    loop {
        let before = s.len();
        s = s.trim();
        while let Some((word, rest)) = leading_label(s) {
            if !LABELS.contains(&word.as_str()) {
                break;
            }
            s = rest;
        }
        s = strip_quotes(s.trim());
        if s.len() == before {
            return s;
        }
    }
}

/// Parses a leading "Label:", "Label 2:", "Q1.", "**Label:**", "**Label**:" or "## Label" (heading alone on its
/// line) and returns the lowercased label word and the text after it. The caller decides which words count.
pub(crate) fn leading_label(s: &str) -> Option<(String, &str)> {
    let t = s.trim_start();
    let unhashed = t.trim_start_matches('#');
    let heading = unhashed.len() < t.len();
    let t = unhashed.trim_start().trim_start_matches(['*', '_']);
    let word_end = t
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(t.len());
    if word_end == 0 {
        return None;
    }
    let word = t[..word_end].to_ascii_lowercase();
    let mut r = t[word_end..].trim_start_matches([' ', '\t']);
    r = r.strip_prefix('#').unwrap_or(r);
    let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
    r = &r[digits..];
    r = r
        .trim_start_matches(['*', '_'])
        .trim_start_matches([' ', '\t']);
    if let Some(rest) = r.strip_prefix(':') {
        r = rest;
    } else if digits > 0 && (r.starts_with('.') || r.starts_with(')')) {
        // "Q1." / "Question 2)" numbering without a colon.
        r = &r[1..];
    } else if !(heading && (r.is_empty() || r.starts_with(['\n', '\r']))) {
        return None;
    }
    let r = r.trim_start_matches(['*', '_']);
    Some((word, r.trim_start()))
}

fn cut_at_answer(s: &str) -> &str {
    // ASCII lowercasing keeps byte offsets, so indices found in `lower` slice `s` on char boundaries.
    let lower = s.to_ascii_lowercase();
    for (i, _) in lower.char_indices() {
        if !ANSWER_MARKERS.iter().any(|m| lower[i..].starts_with(m)) {
            continue;
        }
        // Markdown emphasis or a heading may sit between the boundary and the marker ("**Answer:**").
        let before = s[..i].trim_end_matches(['*', '#', '_']);
        if before.is_empty() || before.ends_with(char::is_whitespace) {
            return &s[..before.len()];
        }
    }
    s
}

/// Removes one pair of surrounding quotes, unless the quote character also occurs inside: then the outer ones
/// probably are not a pair ("'Hi' and 'bye'"), and stripping them would unbalance the text.
fn strip_quotes(s: &str) -> &str {
    const PAIRS: &[(char, char)] = &[
        ('"', '"'),
        ('\'', '\''),
        ('`', '`'),
        ('\u{201c}', '\u{201d}'),
        ('\u{2018}', '\u{2019}'),
        ('\u{ab}', '\u{bb}'),
    ];
    for &(open, close) in PAIRS {
        if let Some(inner) = s.strip_prefix(open).and_then(|r| r.strip_suffix(close)) {
            if !inner.contains(open) && !inner.contains(close) {
                return inner;
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_leading_labels() {
        for (input, want) in [
            ("Task: Write a poem.", "Write a poem."),
            ("instruction:  Summarise this", "Summarise this"),
            ("Question: Why is the sky blue?", "Why is the sky blue?"),
            ("Question 1: Why?", "Why?"),
            ("Q: Why?", "Why?"),
            ("Q1. Why?", "Why?"),
            ("User: hello there", "hello there"),
            ("PROMPT: Draw a cat", "Draw a cat"),
            ("## Task\nWrite a haiku", "Write a haiku"),
            ("## Task: Write a haiku", "Write a haiku"),
            ("**Task:** Write a haiku", "Write a haiku"),
            ("**Task**: Write a haiku", "Write a haiku"),
            ("Task: Question 2: What is 2+2?", "What is 2+2?"),
            ("  \"Task: Explain DNS\"  ", "Explain DNS"),
        ] {
            assert_eq!(sanitize_instruction(input), want, "input {input:?}");
        }
    }

    #[test]
    fn keeps_words_that_only_look_like_labels() {
        for input in [
            "Task management tips for students?",
            "Questions about Rust lifetimes",
            "Note: explain monads",
            "## Task list for a wedding",
            "Q&A: how do magnets work?",
        ] {
            assert_eq!(sanitize_instruction(input), input);
        }
    }

    #[test]
    fn cuts_at_answer_markers() {
        for (input, want) in [
            ("What is 2+2? Answer: 4", "What is 2+2?"),
            ("What is 2+2?\nA: 4", "What is 2+2?"),
            (
                "Explain gravity.\n\nResponse: Gravity is",
                "Explain gravity.",
            ),
            ("Solve x+1=2. SOLUTION: x=1", "Solve x+1=2."),
            ("Name a fruit.\n**Answer:** apple", "Name a fruit."),
            (
                "Question: What is Rust? Answer: a language",
                "What is Rust?",
            ),
        ] {
            assert_eq!(sanitize_instruction(input), want, "input {input:?}");
        }
    }

    #[test]
    fn does_not_cut_inside_words() {
        let s = "Summarise this data: a table of sales. Include the area: north.";
        assert_eq!(sanitize_instruction(s), s);
        assert_eq!(
            sanitize_instruction("Explain the Q&A format"),
            "Explain the Q&A format"
        );
    }

    #[test]
    fn strips_matching_quotes_only() {
        assert_eq!(sanitize_instruction("\"Write a story\""), "Write a story");
        assert_eq!(
            sanitize_instruction("\u{201c}Write a story\u{201d}"),
            "Write a story"
        );
        assert_eq!(sanitize_instruction("'Hi' and 'bye'"), "'Hi' and 'bye'");
        assert_eq!(sanitize_instruction("\"Unclosed"), "\"Unclosed");
    }

    #[test]
    fn label_only_becomes_empty() {
        assert_eq!(sanitize_instruction("Task:"), "");
        assert_eq!(sanitize_instruction("   "), "");
    }

    #[test]
    fn cut_at_newline_takes_first_content_line() {
        assert_eq!(cut_at_newline("What is Rust?\nIt is"), "What is Rust?");
        assert_eq!(
            cut_at_newline("\n\n  What is Rust?\r\nIt is"),
            "What is Rust?"
        );
        assert_eq!(cut_at_newline("no newline"), "no newline");
        assert_eq!(cut_at_newline("\n \n"), "");
    }

    #[test]
    fn detects_template_tokens() {
        for t in TEMPLATE_TOKENS {
            assert!(has_template_tokens(&format!("Write a poem {t} now")), "{t}");
        }
        assert!(!has_template_tokens(
            "Write <b>bold</b> HTML with <s> tags [1]"
        ));
    }

    #[test]
    fn leading_label_reports_word() {
        assert_eq!(leading_label("Answer 3: x"), Some(("answer".into(), "x")));
        assert_eq!(leading_label("Hello world"), None);
    }
}
