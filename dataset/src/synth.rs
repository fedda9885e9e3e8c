//! Instruction Pre-Training synthesis: cut raw text into chunks, ask a model for question/answer pairs about each
//! chunk in the paper's `<QUE> … <ANS> … </END>` format, read them back, and export them as rows or as
//! instruction-augmented text for continued pretraining.

use serde::{Deserialize, Serialize};

use crate::row::{GenInputConfigs, Row, Turn};
use crate::sanitize::leading_label;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaPair {
    pub question: String,
    pub answer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Parsed {
    pub pairs: Vec<QaPair>,
    /// Non-empty text that could not be read as a pair, verbatim (trimmed), so the user sees what was lost.
    pub unparsed: Vec<String>,
}

/// Splits `text` into chunks of at most `max_tokens` tokens as counted by `count_tokens`, breaking at paragraph
/// boundaries where possible, then sentences, then words. A single word over the limit is split between
/// characters; only a single character the counter rates above the limit can exceed it.
pub fn chunk_text(
    text: &str,
    max_tokens: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<String> {
    let packer = Packer {
        max: max_tokens.max(1),
        count: count_tokens,
    };
    let mut out = Vec::new();
    packer.pack(&paragraphs(text), Level::Paragraph, &mut out);
    out
}

#[derive(Clone, Copy)]
enum Level {
    Paragraph,
    Sentence,
    Word,
    Char,
}

impl Level {
    fn separator(self) -> &'static str {
        match self {
            Level::Paragraph => "\n\n",
            Level::Sentence | Level::Word => " ",
            Level::Char => "",
        }
    }
}

struct Packer<'a> {
    max: usize,
    count: &'a dyn Fn(&str) -> usize,
}

impl Packer<'_> {
    /// Greedily joins as many consecutive units as fit; a unit too big alone is split at the next finer level.
    fn pack(&self, units: &[String], level: Level, out: &mut Vec<String>) {
        let mut i = 0;
        while i < units.len() {
            let n = self.largest_fit(&units[i..], level.separator());
            if n == 0 {
                self.split(&units[i], level, out);
                i += 1;
            } else {
                out.push(units[i..i + n].join(level.separator()));
                i += n;
            }
        }
    }

    /// How many leading units fit together. Exponential then binary search keeps tokenizer calls logarithmic
    /// per chunk; every accepted count was measured, so the limit holds even where counts are not monotonic.
    fn largest_fit(&self, units: &[String], sep: &str) -> usize {
        let fits = |n: usize| (self.count)(&units[..n].join(sep)) <= self.max;
        if units.is_empty() || !fits(1) {
            return 0;
        }
        let mut lo = 1;
        let mut hi = 2;
        while hi <= units.len() && fits(hi) {
            lo = hi;
            hi *= 2;
        }
        let mut hi = hi.min(units.len() + 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn split(&self, unit: &str, level: Level, out: &mut Vec<String>) {
        match level {
            Level::Paragraph => self.pack(&sentences(unit), Level::Sentence, out),
            Level::Sentence => {
                let words: Vec<String> = unit.split_whitespace().map(str::to_owned).collect();
                self.pack(&words, Level::Word, out);
            }
            Level::Word => {
                let chars: Vec<String> = unit.chars().map(String::from).collect();
                self.pack(&chars, Level::Char, out);
            }
            Level::Char => out.push(unit.to_owned()),
        }
    }
}

/// Paragraphs are separated by blank lines; each keeps its inner line breaks (lists, verse).
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line.trim_end());
        }
    }
    if !current.is_empty() {
        out.push(current.join("\n"));
    }
    out.into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Sentences end at a word whose last character (past closing quotes and brackets) is terminal punctuation.
fn sentences(paragraph: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for word in paragraph.split_whitespace() {
        current.push(word);
        let end = word.trim_end_matches(['"', '\'', ')', ']', '\u{201d}', '\u{2019}', '*']);
        if end.ends_with([
            '.', '!', '?', '\u{2026}', '\u{3002}', '\u{ff01}', '\u{ff1f}',
        ]) {
            out.push(current.join(" "));
            current.clear();
        }
    }
    if !current.is_empty() {
        out.push(current.join(" "));
    }
    out
}

/// The user message asking a general instruction-tuned model for `pairs` pairs about the chunk. The context sits
/// between <CON> and </CON> as in the synthesizer's own input; the synthesizer's "<s>" is left out because a
/// chat model's tokenizer may read it as a BOS token.
pub fn synth_prompt(chunk: &str, pairs: usize) -> String {
    let pairs = pairs.max(1);
    let noun = if pairs == 1 { "pair" } else { "pairs" };
    format!(
        "Read the text between <CON> and </CON>. Then write {pairs} question/answer {noun} about it: questions a \
         reader could answer from the text (facts, reasoning, summaries), each with a correct, self-contained \
         answer that relies only on the text.\n\n\
         <CON> {chunk} </CON>\n\n\
         Write each pair on its own line, exactly in this format, and nothing else:\n\
         <QUE> {{question}} <ANS> {{answer}} </END>",
        chunk = chunk.trim(),
    )
}

/// Reads pairs from a model's output: `</END>` separates pairs (a missing final one is fine), each with one
/// `<ANS>`; markers are matched case-insensitively. Text without markers is read as "Q:"/"A:" or
/// "Question:"/"Answer:" lines. Repeated questions keep their first answer.
pub fn parse_pairs(output: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for segment in split_ci(output, "</END>") {
        if segment.trim().is_empty() {
            continue;
        }
        if find_ci(segment, "<ANS>").is_none() && find_ci(segment, "<QUE>").is_none() {
            parse_labelled_lines(segment, &mut parsed);
            continue;
        }
        let mut pieces = split_ci(segment, "<QUE>").into_iter();
        // Before the first <QUE>: a pair whose <QUE> is missing, or prose.
        if let Some(head) = pieces.next() {
            if find_ci(head, "<ANS>").is_some() {
                marked_pair(head, "", &mut parsed);
            } else if !head.trim().is_empty() {
                parse_labelled_lines(head, &mut parsed);
            }
        }
        for piece in pieces {
            marked_pair(piece, "<QUE>", &mut parsed);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    parsed
        .pairs
        .retain(|p| seen.insert(p.question.trim().to_lowercase()));
    parsed
}

fn marked_pair(piece: &str, marker: &str, parsed: &mut Parsed) {
    let parts = split_ci(piece, "<ANS>");
    match parts.as_slice() {
        [q, a] if !q.trim().is_empty() && !a.trim().is_empty() => parsed.pairs.push(QaPair {
            question: q.trim().to_owned(),
            answer: a.trim().to_owned(),
        }),
        _ if piece.trim().is_empty() => {}
        _ => parsed
            .unparsed
            .push(format!("{marker}{piece}").trim().to_owned()),
    }
}

enum Slot {
    Question,
    Answer,
}

/// The fallback reader for "Q:"/"A:" and "Question:"/"Answer:" lines; continuation lines extend the current
/// question or answer. Lines that belong to no complete pair go to `unparsed` as one block each.
fn parse_labelled_lines(text: &str, parsed: &mut Parsed) {
    let mut block: Vec<&str> = Vec::new();
    let mut question: Option<String> = None;
    let mut answer: Option<String> = None;
    let flush = |block: &mut Vec<&str>,
                 q: &mut Option<String>,
                 a: &mut Option<String>,
                 parsed: &mut Parsed| {
        match (q.take(), a.take()) {
            (Some(q), Some(a)) if !q.trim().is_empty() && !a.trim().is_empty() => {
                parsed.pairs.push(QaPair {
                    question: q.trim().to_owned(),
                    answer: a.trim().to_owned(),
                })
            }
            _ => {
                let text = block.join("\n");
                if !text.trim().is_empty() {
                    parsed.unparsed.push(text.trim().to_owned());
                }
            }
        }
        block.clear();
    };
    for line in text.lines() {
        let label = leading_label(line).and_then(|(word, rest)| match word.as_str() {
            "q" | "question" => Some((Slot::Question, rest)),
            "a" | "answer" => Some((Slot::Answer, rest)),
            _ => None,
        });
        match label {
            Some((Slot::Question, rest)) => {
                flush(&mut block, &mut question, &mut answer, parsed);
                question = Some(rest.to_owned());
            }
            Some((Slot::Answer, rest)) if question.is_some() && answer.is_none() => {
                answer = Some(rest.to_owned());
            }
            _ => {
                if let Some(slot) = answer.as_mut().or(question.as_mut()) {
                    slot.push('\n');
                    slot.push_str(line);
                } else if block.is_empty() && line.trim().is_empty() {
                    continue;
                }
            }
        }
        block.push(line);
    }
    flush(&mut block, &mut question, &mut answer, parsed);
}

/// Byte offset of `needle` (ASCII) in `haystack`, ignoring ASCII case.
fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Like `str::split` with an ASCII needle, ignoring ASCII case. Matches start at an ASCII byte, so the slices
/// always fall on char boundaries.
fn split_ci<'a>(haystack: &'a str, needle: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = haystack;
    while let Some(i) = find_ci(rest, needle) {
        out.push(&rest[..i]);
        rest = &rest[i + needle.len()..];
    }
    out.push(rest);
    out
}

/// Single-turn rows, one per pair. The sample index packs chunk and pair so every row of a run has its own id.
pub fn pairs_to_rows(
    chunk_index: usize,
    pairs: &[QaPair],
    configs_base: &GenInputConfigs,
) -> Vec<Row> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let mut configs = configs_base.clone();
            configs.sample_index = (chunk_index as u64)
                .saturating_mul(1000)
                .saturating_add(i as u64);
            Row::new(
                vec![
                    Turn::human(pair.question.clone()),
                    Turn::gpt(pair.answer.clone()),
                ],
                configs,
            )
        })
        .collect()
}

/// The chunk, a blank line, then "Question: …\nAnswer: …" per pair separated by blank lines.
pub fn augmented_text(chunk: &str, pairs: &[QaPair]) -> String {
    let mut out = chunk.trim_end().to_owned();
    for pair in pairs {
        out.push_str("\n\nQuestion: ");
        out.push_str(&pair.question);
        out.push_str("\nAnswer: ");
        out.push_str(&pair.answer);
    }
    out
}

/// One {"text": …} line per chunk, with a trailing newline (like `formats::export`).
pub fn augmented_jsonl(items: &[(String, Vec<QaPair>)]) -> String {
    let mut out = String::new();
    for (chunk, pairs) in items {
        out.push_str(&serde_json::json!({ "text": augmented_text(chunk, pairs) }).to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn pair(q: &str, a: &str) -> QaPair {
        QaPair {
            question: q.into(),
            answer: a.into(),
        }
    }

    fn all_words(chunks: &[String]) -> Vec<&str> {
        chunks.iter().flat_map(|c| c.split_whitespace()).collect()
    }

    #[test]
    fn chunks_prefer_paragraphs() {
        let text = "one two three four\n\nfive six seven eight\n\n\n  nine ten eleven twelve  \n";
        let chunks = chunk_text(text, 8, &words);
        assert_eq!(
            chunks,
            [
                "one two three four\n\nfive six seven eight",
                "nine ten eleven twelve"
            ]
        );
    }

    #[test]
    fn chunks_fall_back_to_sentences_then_words() {
        let text = "A b c d e. F g h i j! G h i j k? \"Last one here.\"";
        let chunks = chunk_text(text, 10, &words);
        assert_eq!(
            chunks,
            ["A b c d e. F g h i j!", "G h i j k? \"Last one here.\""]
        );

        let long: Vec<String> = (0..25).map(|i| format!("w{i}")).collect();
        let chunks = chunk_text(&long.join(" "), 10, &words);
        assert_eq!(
            chunks.iter().map(|c| words(c)).collect::<Vec<_>>(),
            [10, 10, 5]
        );
    }

    #[test]
    fn chunks_cover_all_words_within_limit() {
        let text = "Rust is a language. It has ownership and borrowing, which make memory safety checkable.\n\n\
                    The borrow checker runs at compile time! Lifetimes name how long references live.\n\
                    Traits describe shared behaviour.\n\n\
                    Short.\n\n\
                    A very long sentence without any stop that keeps going and going past every reasonable limit \
                    until it finally has to be cut between words";
        for max in [1, 3, 7, 12, 50] {
            let chunks = chunk_text(text, max, &words);
            assert_eq!(
                all_words(&chunks),
                text.split_whitespace().collect::<Vec<_>>(),
                "max {max}"
            );
            for c in &chunks {
                assert!(!c.trim().is_empty());
                assert!(words(c) <= max, "max {max}: {c:?}");
            }
        }
    }

    #[test]
    fn oversized_words_split_by_characters() {
        let chars = |s: &str| s.chars().count();
        let chunks = chunk_text("abcdefghij xy", 4, &chars);
        assert_eq!(chunks, ["abcd", "efgh", "ij", "xy"]);
        assert!(chunk_text("  \n\n ", 5, &words).is_empty());
        assert_eq!(chunk_text("a b", 0, &words), ["a", "b"]);
    }

    #[test]
    fn prompt_holds_context_and_format() {
        let p = synth_prompt("  The sky is blue.\n", 3);
        assert!(p.contains("<CON> The sky is blue. </CON>"));
        assert!(p.contains("write 3 question/answer pairs"));
        assert!(p.contains("<QUE> {question} <ANS> {answer} </END>"));
        assert!(!p.contains("<s>"));
        assert!(synth_prompt("x", 1).contains("1 question/answer pair about"));
    }

    #[test]
    fn parses_paper_format() {
        let out = "<QUE> What colour is the sky? <ANS> Blue. </END>\n\n<QUE>Why?<ANS>Rayleigh scattering.</END>\n\n\
                   <QUE> When is it red? <ANS> At sunset.";
        let parsed = parse_pairs(out);
        assert_eq!(
            parsed.pairs,
            [
                pair("What colour is the sky?", "Blue."),
                pair("Why?", "Rayleigh scattering."),
                pair("When is it red?", "At sunset.")
            ]
        );
        assert!(parsed.unparsed.is_empty());
    }

    #[test]
    fn tolerates_missing_que_case_and_multiline_answers() {
        let out = "Here are the pairs:\n<que> First? <ans> One\nand more. </end>\nSecond? <ANS> Two </END>";
        let parsed = parse_pairs(out);
        assert_eq!(
            parsed.pairs,
            [pair("First?", "One\nand more."), pair("Second?", "Two")]
        );
        assert_eq!(parsed.unparsed, ["Here are the pairs:"]);
    }

    #[test]
    fn unreadable_pieces_are_kept_verbatim() {
        let out = "<QUE> No answer here </END><QUE> Two <ANS> answers <ANS> here </END><QUE> <ANS> empty q </END> \
                   <QUE> Good? <ANS> Yes </END>";
        let parsed = parse_pairs(out);
        assert_eq!(parsed.pairs, [pair("Good?", "Yes")]);
        assert_eq!(
            parsed.unparsed,
            [
                "<QUE> No answer here",
                "<QUE> Two <ANS> answers <ANS> here",
                "<QUE> <ANS> empty q"
            ]
        );
    }

    #[test]
    fn fallback_labelled_lines() {
        let out = "Sure! Here you go.\n\nQ: What is Rust?\nA: A systems language.\n\n\
                   Question 2: Who made it?\nAnswer: Mozilla,\noriginally.\nQ: Dangling question?\n";
        let parsed = parse_pairs(out);
        assert_eq!(
            parsed.pairs,
            [
                pair("What is Rust?", "A systems language."),
                pair("Who made it?", "Mozilla,\noriginally.")
            ]
        );
        assert_eq!(
            parsed.unparsed,
            ["Sure! Here you go.", "Q: Dangling question?"]
        );
    }

    #[test]
    fn duplicate_questions_keep_the_first() {
        let out = "<QUE> What is X? <ANS> first </END><QUE>  what is x?  <ANS> second </END><QUE> Y? <ANS> y </END>";
        let parsed = parse_pairs(out);
        assert_eq!(parsed.pairs, [pair("What is X?", "first"), pair("Y?", "y")]);
    }

    #[test]
    fn garbage_goes_to_unparsed() {
        let parsed = parse_pairs("I'm sorry, I can't do that.");
        assert!(parsed.pairs.is_empty());
        assert_eq!(parsed.unparsed, ["I'm sorry, I can't do that."]);
        assert_eq!(parse_pairs("  \n </END> "), Parsed::default());
    }

    #[test]
    fn rows_get_distinct_sample_indices_and_ids() {
        let base = GenInputConfigs {
            model: "m".into(),
            seed: 1,
            ..Default::default()
        };
        let rows = pairs_to_rows(3, &[pair("q1", "a1"), pair("q2", "a2")], &base);
        let indices: Vec<u64> = rows
            .iter()
            .map(|r| r.gen_input_configs.as_ref().unwrap().sample_index)
            .collect();
        assert_eq!(indices, [3000, 3001]);
        assert_ne!(rows[0].id, rows[1].id);
        assert_eq!(
            rows[0].id,
            crate::row::row_id(rows[0].gen_input_configs.as_ref().unwrap())
        );
        assert_eq!(rows[1].instruction, "q2");
        assert_eq!(rows[1].response, "a2");
        assert_eq!(rows[0].conversations.len(), 2);
        assert_eq!(rows[0].gen_input_configs.as_ref().unwrap().model, "m");
    }

    #[test]
    fn augmented_outputs() {
        let pairs = [pair("Q1?", "A1."), pair("Q2?", "A2.")];
        assert_eq!(
            augmented_text("Chunk text.\n", &pairs),
            "Chunk text.\n\nQuestion: Q1?\nAnswer: A1.\n\nQuestion: Q2?\nAnswer: A2."
        );
        assert_eq!(augmented_text("Just text", &[]), "Just text");
        let jsonl = augmented_jsonl(&[("C1".into(), pairs.to_vec()), ("C2".into(), vec![])]);
        let lines: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(jsonl.ends_with('\n'));
        assert!(lines[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("C1\n\nQuestion: Q1?"));
        assert_eq!(lines[1]["text"], "C2");
    }
}
