//! Quality filters for generated rows. Each row is counted under the first filter that removes it, so the report
//! tells which rule cost how many rows.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::row::{first_value, fnv1a64, Row, GPT, HUMAN};

/// Filter names in the order they run; `FilterReport::removed` lists them all in this order.
pub const FILTER_NAMES: [&str; 7] = [
    "empty",
    "too short",
    "too long",
    "colon ending",
    "repetition",
    "language",
    "near-duplicates",
];

/// Length limits apply to every turn (instruction limits to human turns, response limits to gpt turns).
/// The colon, repetition and empty checks also look at every turn; language and near-duplicates look at the
/// first instruction only, since that is what Magpie's language and dedup steps judge a sample by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSettings {
    pub min_instruction_chars: usize,
    /// 0 = no limit (a usize::MAX sentinel would not survive a round trip through the 32-bit wasm app).
    pub max_instruction_chars: usize,
    pub min_response_chars: usize,
    /// 0 = no limit.
    pub max_response_chars: usize,
    /// Instruction ending in ':' (after trim): the model announced content it never wrote.
    pub drop_colon_ending: bool,
    /// Drop if the share of repeated word 3-grams in an instruction or response exceeds this (0..1).
    pub max_repetition: Option<f32>,
    /// whatlang ISO 639-3 codes, e.g. ["eng"]; empty = any. Only confident detections on ≥ 20 chars remove rows.
    pub languages: Vec<String>,
    /// MinHash Jaccard estimate of instruction word-3-gram sets at or above which a later row is a near-duplicate
    /// of an earlier kept one. Banding finds candidate pairs reliably from about 0.5 up; lower values miss pairs.
    pub dedup_threshold: Option<f32>,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Preset::None.settings()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    None,
    Basic,
    Air,
    Pro,
}

impl Preset {
    pub const ALL: [Preset; 4] = [Preset::None, Preset::Basic, Preset::Air, Preset::Pro];

    pub fn name(self) -> &'static str {
        match self {
            Preset::None => "none",
            Preset::Basic => "basic",
            Preset::Air => "air",
            Preset::Pro => "pro",
        }
    }

    /// Magpie's filtered releases (Magpie-Air/Pro-300K-Filtered) keep rows with input quality ≥ good, instruct
    /// reward > -10, no instruction ending in ':', no repetition, no near-duplicate by embedding distance, and
    /// then the longest responses. Quality and reward need a judge and a reward model (the judge's tags live in
    /// `Tags`, outside these settings); the rest is modelled here, with MinHash standing in for embeddings.
    pub fn settings(self) -> FilterSettings {
        match self {
            // Only "empty" runs: a row with nothing to learn from is never worth keeping.
            Preset::None => FilterSettings {
                min_instruction_chars: 0,
                max_instruction_chars: 0,
                min_response_chars: 0,
                max_response_chars: 0,
                drop_colon_ending: false,
                max_repetition: None,
                languages: Vec::new(),
                dedup_threshold: None,
            },
            // Hygiene that no one would argue with: truncated instructions and identical instruction word sets.
            Preset::Basic => FilterSettings {
                min_instruction_chars: 3,
                max_instruction_chars: 0,
                min_response_chars: 1,
                max_response_chars: 0,
                drop_colon_ending: true,
                max_repetition: None,
                languages: Vec::new(),
                dedup_threshold: Some(1.0),
            },
            // Magpie-Air's rules at a small model's scale: English (the filtered releases are English), a floor
            // on instruction length so one-word fragments go, no cap on responses (Magpie prefers the longest),
            // degenerate loops out (normal prose repeats well under 30% of its 3-grams), and only near-verbatim
            // duplicates removed (Magpie drops pairs at embedding distance 0, i.e. the same text).
            Preset::Air => FilterSettings {
                min_instruction_chars: 10,
                max_instruction_chars: 4000,
                min_response_chars: 20,
                max_response_chars: 0,
                drop_colon_ending: true,
                max_repetition: Some(0.3),
                languages: vec!["eng".into()],
                dedup_threshold: Some(0.9),
            },
            // Magpie-Pro's rules, stricter: longer instructions and responses (standing in for "input quality ≥
            // good" and "keep the longest responses"), tighter repetition, and rewordings counted as duplicates
            // (0.7 Jaccard catches a one-word change in a 20+-word instruction, not different questions).
            Preset::Pro => FilterSettings {
                min_instruction_chars: 30,
                max_instruction_chars: 4000,
                min_response_chars: 100,
                max_response_chars: 0,
                drop_colon_ending: true,
                max_repetition: Some(0.2),
                languages: vec!["eng".into()],
                dedup_threshold: Some(0.7),
            },
        }
    }
}

impl FromStr for Preset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s_lower = s.trim().to_ascii_lowercase();
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s_lower)
            .ok_or_else(|| Error::UnknownPreset(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterReport {
    /// Indices into the input, in input order.
    pub kept: Vec<usize>,
    /// Every filter with how many rows it removed (zeros included), in `FILTER_NAMES` order.
    pub removed: Vec<(String, usize)>,
}

pub fn apply(rows: &[Row], settings: &FilterSettings) -> FilterReport {
    let mut counts = [0usize; FILTER_NAMES.len()];
    let mut kept = Vec::new();
    let mut dedup = settings.dedup_threshold.map(Dedup::new);
    for (index, row) in rows.iter().enumerate() {
        match first_failing(row, settings, dedup.as_mut()) {
            Some(filter) => counts[filter] += 1,
            None => kept.push(index),
        }
    }
    FilterReport {
        kept,
        removed: FILTER_NAMES
            .iter()
            .zip(counts)
            .map(|(name, count)| ((*name).to_owned(), count))
            .collect(),
    }
}

/// Index into `FILTER_NAMES` of the first filter that removes the row. Near-duplicates run last and remember a
/// row only when it is kept, so a duplicate of a rejected row is judged on its own merits.
fn first_failing(row: &Row, s: &FilterSettings, dedup: Option<&mut Dedup>) -> Option<usize> {
    let humans = || {
        row.conversations
            .iter()
            .filter(|t| t.from == HUMAN)
            .map(|t| t.value.trim())
    };
    let gpts = || {
        row.conversations
            .iter()
            .filter(|t| t.from == GPT)
            .map(|t| t.value.trim())
    };
    let chars = |t: &str| t.chars().count();

    if humans().next().is_none()
        || gpts().next().is_none()
        || humans().chain(gpts()).any(str::is_empty)
    {
        return Some(0);
    }
    if humans().any(|t| chars(t) < s.min_instruction_chars)
        || gpts().any(|t| chars(t) < s.min_response_chars)
    {
        return Some(1);
    }
    let over = |t: &str, max: usize| max > 0 && chars(t) > max;
    if humans().any(|t| over(t, s.max_instruction_chars))
        || gpts().any(|t| over(t, s.max_response_chars))
    {
        return Some(2);
    }
    if s.drop_colon_ending && humans().any(|t| t.ends_with(':')) {
        return Some(3);
    }
    if let Some(max) = s.max_repetition {
        if humans()
            .chain(gpts())
            .any(|t| repeated_trigram_share(t) > max)
        {
            return Some(4);
        }
    }
    let instruction = first_value(&row.conversations, HUMAN)
        .unwrap_or_default()
        .trim();
    if !s.languages.is_empty() && !language_allowed(instruction, &s.languages) {
        return Some(5);
    }
    if let Some(dedup) = dedup {
        if !dedup.insert_if_new(instruction) {
            return Some(6);
        }
    }
    None
}

/// Lowercased words with punctuation removed, so "Hello," and "hello" are the same word.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Share of word 3-grams that repeat an earlier one: 0 for fresh text, near 1 for a loop.
fn repeated_trigram_share(text: &str) -> f32 {
    let words = words(text);
    if words.len() < 3 {
        return 0.0;
    }
    let grams: Vec<&[String]> = words.windows(3).collect();
    let distinct: BTreeSet<&[String]> = grams.iter().copied().collect();
    (grams.len() - distinct.len()) as f32 / grams.len() as f32
}

/// Below 20 characters or without a reliable detection the text is kept: short texts mislead whatlang.
fn language_allowed(text: &str, languages: &[String]) -> bool {
    if text.chars().count() < 20 {
        return true;
    }
    match whatlang::detect(text) {
        Some(info) if info.is_reliable() => {
            let code = info.lang().code();
            languages
                .iter()
                .any(|l| l.trim().eq_ignore_ascii_case(code))
        }
        _ => true,
    }
}

const NUM_HASHES: usize = 64;
const BANDS: usize = 16;
const ROWS_PER_BAND: usize = NUM_HASHES / BANDS;

/// MinHash signatures of kept instructions with LSH banding: two rows become candidates when one band (4 hash
/// values) agrees, which for Jaccard 0.7 happens with probability 1 - (1 - 0.7^4)^16 ≈ 0.99.
struct Dedup {
    threshold: f32,
    seeds: [u64; NUM_HASHES],
    signatures: Vec<[u64; NUM_HASHES]>,
    // BTreeMap rather than HashMap: no RandomState, so runs are reproducible by construction.
    bands: Vec<BTreeMap<u64, Vec<usize>>>,
}

impl Dedup {
    fn new(threshold: f32) -> Self {
        let mut state = 0x5eed_0fa7_1a00_u64;
        let seeds = std::array::from_fn(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(state)
        });
        Dedup {
            threshold,
            seeds,
            signatures: Vec::new(),
            bands: vec![BTreeMap::new(); BANDS],
        }
    }

    /// Remembers the text and returns true, or returns false when it near-duplicates a remembered one.
    fn insert_if_new(&mut self, text: &str) -> bool {
        let sig = self.signature(text);
        let keys: Vec<u64> = sig
            .chunks(ROWS_PER_BAND)
            .map(|band| {
                let bytes: Vec<u8> = band.iter().flat_map(|v| v.to_le_bytes()).collect();
                fnv1a64(&bytes)
            })
            .collect();
        let candidates: BTreeSet<usize> = keys
            .iter()
            .zip(&self.bands)
            .filter_map(|(key, band)| band.get(key))
            .flatten()
            .copied()
            .collect();
        let duplicate = candidates.into_iter().any(|i| {
            let same = self.signatures[i]
                .iter()
                .zip(&sig)
                .filter(|(a, b)| a == b)
                .count();
            same as f32 / NUM_HASHES as f32 >= self.threshold
        });
        if duplicate {
            return false;
        }
        let index = self.signatures.len();
        self.signatures.push(sig);
        for (key, band) in keys.into_iter().zip(&mut self.bands) {
            band.entry(key).or_default().push(index);
        }
        true
    }

    fn signature(&self, text: &str) -> [u64; NUM_HASHES] {
        let shingles = shingle_hashes(text);
        std::array::from_fn(|k| {
            shingles
                .iter()
                .map(|&s| mix64(s ^ self.seeds[k]))
                .min()
                .unwrap_or(u64::MAX)
        })
    }
}

/// Word 3-grams; a text under 3 words uses its words, and one without words its whole lowercased self, so every
/// text has at least one shingle.
fn shingle_hashes(text: &str) -> Vec<u64> {
    let words = words(text);
    // 0x1f cannot occur in a word (words are alphanumeric), so joined shingles stay unambiguous.
    let hash = |ws: &[String]| fnv1a64(ws.join("\u{1f}").as_bytes());
    if words.len() >= 3 {
        words.windows(3).map(hash).collect()
    } else if !words.is_empty() {
        words.chunks(1).map(hash).collect()
    } else {
        vec![fnv1a64(text.trim().to_lowercase().as_bytes())]
    }
}

/// SplitMix64's finaliser: a bijection on u64, so `mix64(x ^ seed)` gives each seed its own hash permutation.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Turn;

    fn row(instruction: &str, response: &str) -> Row {
        Row::from_conversations(vec![Turn::human(instruction), Turn::gpt(response)])
    }

    /// Settings that remove nothing beyond "empty", to test one filter at a time.
    fn off() -> FilterSettings {
        Preset::None.settings()
    }

    fn count(report: &FilterReport, name: &str) -> usize {
        report
            .removed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .unwrap_or(usize::MAX)
    }

    const LONG_A: &str = "Explain how the water cycle moves water between oceans, clouds, rivers and underground \
                          aquifers, and describe what role the sun plays in evaporation over a typical summer day";
    // LONG_A with one word changed ("typical" -> "normal").
    const LONG_A_REWORDED: &str = "Explain how the water cycle moves water between oceans, clouds, rivers and \
                          underground aquifers, and describe what role the sun plays in evaporation over a normal \
                          summer day";
    const LONG_B: &str = "Write a short story about a lighthouse keeper who discovers a message in a bottle from \
                          a sailor who vanished fifty years ago during a winter storm off the coast";
    const LONG_C: &str = "Compare the performance characteristics of linked lists and dynamic arrays for random \
                          access, insertion at the front, and iteration when the collection holds a million items";

    #[test]
    fn report_lists_every_filter_in_order() {
        let report = apply(&[row("Hi there", "Hello")], &off());
        let names: Vec<&str> = report.removed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, FILTER_NAMES);
        assert!(report.removed.iter().all(|(_, c)| *c == 0));
        assert_eq!(report.kept, [0]);
    }

    #[test]
    fn empty_turns_are_removed() {
        let rows = [
            row("q", "a"),
            row("   ", "a"),
            row("q", "\n"),
            Row::from_conversations(vec![Turn::human("q")]),
            Row::from_conversations(vec![
                Turn::human("q"),
                Turn::gpt("a"),
                Turn::human(""),
                Turn::gpt("b"),
            ]),
            row("q2", "a2"),
        ];
        let report = apply(&rows, &off());
        assert_eq!(report.kept, [0, 5]);
        assert_eq!(count(&report, "empty"), 4);
    }

    #[test]
    fn length_limits() {
        let s = FilterSettings {
            min_instruction_chars: 5,
            max_instruction_chars: 20,
            min_response_chars: 3,
            max_response_chars: 10,
            ..off()
        };
        let rows = [
            row("Hello there", "Fine"),                     // kept
            row("Hi", "Fine"),                              // instruction too short
            row("Hello there", "ok"),                       // response too short
            row("Hello there, how are you today?", "Fine"), // instruction too long
            row("Hello there", "Fine, thank you"),          // response too long
            row("héllo", "ünïcödé ✓"), // 9 chars but 15 bytes: limits count chars, so kept
        ];
        let report = apply(&rows, &s);
        assert_eq!(report.kept, [0, 5]);
        assert_eq!(count(&report, "too short"), 2);
        assert_eq!(count(&report, "too long"), 2);
    }

    #[test]
    fn colon_ending() {
        let s = FilterSettings {
            drop_colon_ending: true,
            ..off()
        };
        let rows = [
            row("Write a list of:", "1. a"),
            row("Write a list of fruits", "apple"),
            row("Note: be brief.  ", "ok"),
            row("Give examples:  \n", "x"),
        ];
        let report = apply(&rows, &s);
        assert_eq!(report.kept, [1, 2]);
        assert_eq!(count(&report, "colon ending"), 2);
    }

    #[test]
    fn repetition() {
        assert_eq!(repeated_trigram_share("a b c d e"), 0.0);
        // 7 trigrams, 3 distinct.
        assert!(
            (repeated_trigram_share("the cat sat the cat sat the cat sat") - 4.0 / 7.0).abs()
                < 1e-6
        );
        let s = FilterSettings {
            max_repetition: Some(0.3),
            ..off()
        };
        let looped = "I am happy to help. ".repeat(12);
        let rows = [
            row(
                "Tell me about cats.",
                "Cats are small carnivorous mammals that people keep as pets.",
            ),
            row("Tell me about dogs.", &looped),
            row(&"Repeat after me please. ".repeat(5), "ok"),
        ];
        let report = apply(&rows, &s);
        assert_eq!(report.kept, [0]);
        assert_eq!(count(&report, "repetition"), 2);
    }

    #[test]
    fn language() {
        let s = FilterSettings {
            languages: vec!["eng".into()],
            ..off()
        };
        let rows = [
            row("Write a short story about a lighthouse keeper who finds a message in a bottle.", "Once..."),
            row("Pouvez-vous m'expliquer comment fonctionne la photosynthèse chez les plantes vertes ?", "La..."),
            row("Bonjour !", "Salut"), // too short to judge: kept
        ];
        let report = apply(&rows, &s);
        assert_eq!(report.kept, [0, 2]);
        assert_eq!(count(&report, "language"), 1);

        let french = FilterSettings {
            languages: vec!["FRA".into()],
            ..off()
        };
        assert_eq!(apply(&rows, &french).kept, [1, 2]);
    }

    #[test]
    fn near_duplicates() {
        let s = FilterSettings {
            dedup_threshold: Some(0.7),
            ..off()
        };
        let rows = [
            row(LONG_A, "a"),
            row(LONG_B, "b"),
            row(LONG_A, "different answer"),  // exact duplicate
            row(LONG_A_REWORDED, "c"),        // one word changed
            row(&LONG_B.to_uppercase(), "d"), // same words, different case and no other change
            row(LONG_C, "e"),
            row("What is Rust?", "f"),
            row("What is Go?", "g"),
        ];
        let report = apply(&rows, &s);
        assert_eq!(report.kept, [0, 1, 5, 6, 7]);
        assert_eq!(count(&report, "near-duplicates"), 3);

        // At 1.0 only identical word sets go: the reworded one stays.
        let exact = FilterSettings {
            dedup_threshold: Some(1.0),
            ..off()
        };
        assert_eq!(apply(&rows, &exact).kept, [0, 1, 3, 5, 6, 7]);
    }

    #[test]
    fn dedup_only_remembers_kept_rows() {
        let s = FilterSettings {
            drop_colon_ending: true,
            dedup_threshold: Some(0.9),
            ..off()
        };
        let rows = [
            row(LONG_A, "a"),
            row("Give examples:", "x"),
            row(LONG_A, "b"),
            row("Give examples:", "y"),
        ];
        let report = apply(&rows, &s);
        assert_eq!(report.kept, [0]);
        assert_eq!(count(&report, "colon ending"), 2);
        assert_eq!(count(&report, "near-duplicates"), 1);
    }

    #[test]
    fn first_failing_filter_gets_the_count() {
        let s = FilterSettings {
            min_instruction_chars: 10,
            drop_colon_ending: true,
            ..off()
        };
        // Both too short and ending in ':': counted once, under "too short".
        let report = apply(&[row("List:", "a"), row("A longer list of:", "b")], &s);
        assert_eq!(count(&report, "too short"), 1);
        assert_eq!(count(&report, "colon ending"), 1);
        assert!(report.kept.is_empty());
    }

    #[test]
    fn deterministic_across_runs() {
        let rows: Vec<Row> = [LONG_A, LONG_B, LONG_A_REWORDED, LONG_C]
            .iter()
            .map(|t| row(t, "x"))
            .collect();
        let s = Preset::Pro.settings();
        let first = apply(&rows, &s);
        assert_eq!(first, apply(&rows, &s));
        let a = Dedup::new(0.7).signature(LONG_A);
        assert_eq!(a, Dedup::new(0.7).signature(LONG_A));
    }

    #[test]
    fn presets_parse_and_tighten() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
        }
        assert!(matches!(
            "ultra".parse::<Preset>(),
            Err(Error::UnknownPreset(_))
        ));
        let (air, pro) = (Preset::Air.settings(), Preset::Pro.settings());
        assert!(pro.min_instruction_chars > air.min_instruction_chars);
        assert!(pro.dedup_threshold < air.dedup_threshold);
        assert_eq!(FilterSettings::default(), Preset::None.settings());
    }
}
