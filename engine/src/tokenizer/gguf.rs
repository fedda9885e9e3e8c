//! Tokenizers from GGUF vocabularies (`tokenizer.ggml.*`), reproducing llama.cpp's tokenisation (llama-vocab.cpp).

use super::pieces::{byte_level_bytes, spm_bytes, Kind, Pieces};
use super::{tok_err, Tokenizer, END_OF_TURN_TEXTS};
use crate::error::{Error, Format, Result};
use crate::format::{MetaValue, Metadata};
use std::collections::HashSet;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// GGUF token types.
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_UNUSED: i64 = 5;
const TYPE_BYTE: i64 = 6;

// Pre-tokenizer regexes as llama.cpp writes them (its `(?i:...)`-free forms of the Hugging Face originals).
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Bound on the work of deriving SentencePiece merges (sum of squared piece lengths), against crafted vocabularies.
const MAX_SPLIT_WORK: u64 = 1 << 31;

/// How llama.cpp pre-splits text for one `tokenizer.ggml.pre` value.
struct PreSplit {
    /// Applied in turn; each keeps both the matches and the text between them as pieces.
    regexes: &'static [&'static str],
    /// A word that is itself in the vocabulary is emitted whole, without running merges.
    ignore_merges: bool,
    /// llama.cpp's default for `add_bos_token` when the file doesn't say.
    add_bos: bool,
}

fn pre_split(pre: &str) -> Result<PreSplit> {
    let split = |regexes, ignore_merges, add_bos| {
        Ok(PreSplit {
            regexes,
            ignore_merges,
            add_bos,
        })
    };
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => split(&[LLAMA3_RE], true, true),
        "dbrx" | "smaug-bpe" | "chatglm-bpe" => split(&[LLAMA3_RE], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => split(&[r"\p{N}", GPT2_RE], false, false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" | "exaone4" => split(&[GPT2_RE], false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "megrez" | "hunyuan"
        | "solar-open" | "grok-2" => split(&[QWEN2_RE], false, false),
        "" | "default" => split(
            &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_RE,
                r"\p{N}+",
                "[0-9][0-9][0-9]",
            ],
            false,
            false,
        ),
        other => Err(Error::Unsupported(format!(
            "GGUF byte-level BPE pre-tokenizer `{other}`"
        ))),
    }
}

fn malformed(detail: String) -> Error {
    Error::Malformed {
        format: Format::Gguf,
        detail,
    }
}

fn array<'m>(meta: &'m Metadata, key: &str) -> Result<Option<&'m [MetaValue]>> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| malformed(format!("`{key}` is not an array"))),
    }
}

/// An array of at least `n` entries, each converted by `f`.
fn typed_array<T>(
    meta: &Metadata,
    key: &str,
    n: usize,
    f: impl Fn(&MetaValue) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let Some(values) = array(meta, key)? else {
        return Ok(None);
    };
    if values.len() < n {
        return Err(malformed(format!(
            "`{key}` has {} entries for {n} tokens",
            values.len()
        )));
    }
    values[..n]
        .iter()
        .map(|v| {
            f(v).ok_or_else(|| malformed(format!("`{key}` holds a value of the wrong type: {v:?}")))
        })
        .collect::<Result<Vec<T>>>()
        .map(Some)
}

fn token_id(meta: &Metadata, key: &str, n: usize) -> Option<u32> {
    let id = meta.get(key)?.as_u64()?;
    (id < n as u64).then_some(id as u32)
}

fn flag(meta: &Metadata, key: &str) -> Option<bool> {
    meta.get(key).and_then(MetaValue::as_bool)
}

/// One GGUF vocabulary, read and checked.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i64>,
    /// Text → id (the last id wins for a repeated text, as in llama.cpp); moved into the BPE model when it is built.
    ids: BpeVocab,
}

impl Vocab {
    fn read(meta: &Metadata) -> Result<Self> {
        let raw = array(meta, "tokenizer.ggml.tokens")?
            .ok_or_else(|| malformed("`tokenizer.ggml.tokens` is missing".into()))?;
        if raw.is_empty() || raw.len() > u32::MAX as usize {
            return Err(malformed(format!(
                "`tokenizer.ggml.tokens` has {} entries",
                raw.len()
            )));
        }
        let tokens = raw
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                // llama.cpp renames empty tokens so that every id keeps a distinct text.
                Some("") => Ok(format!("[EMPTY_{i}]")),
                Some(s) => Ok(s.to_string()),
                None => Err(malformed(format!(
                    "`tokenizer.ggml.tokens` entry {i} is not a string"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let n = tokens.len();
        let mut types = typed_array(meta, "tokenizer.ggml.token_type", n, MetaValue::as_i64)?
            .unwrap_or_else(|| vec![TYPE_NORMAL; n]);
        let ids: BpeVocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // llama.cpp treats end-of-turn texts as control tokens even where the converter marked them normal.
        for text in END_OF_TURN_TEXTS {
            if let Some(&id) = ids.get(*text) {
                types[id as usize] = TYPE_CONTROL;
            }
        }
        Ok(Vocab { tokens, types, ids })
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens matched in raw text before the model runs: control, user-defined and unknown ones.
    fn added_tokens(&self, meta: &Metadata) -> Vec<AddedToken> {
        let name = meta
            .get("general.name")
            .and_then(MetaValue::as_str)
            .unwrap_or_default()
            .to_lowercase();
        // llama.cpp: Phi-3's special tokens swallow the whitespace after them, except these.
        let phi3 = name.contains("phi-3") || name.contains("phi3");
        self.tokens
            .iter()
            .zip(&self.types)
            .filter(|(_, &ty)| matches!(ty, TYPE_UNKNOWN | TYPE_CONTROL | TYPE_USER_DEFINED))
            .map(|(text, &ty)| {
                let rstrip = phi3 && !matches!(text.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
                AddedToken::from(text.as_str(), ty != TYPE_USER_DEFINED)
                    .normalized(false)
                    .rstrip(rstrip)
            })
            .collect()
    }

    fn kind(&self, id: usize) -> Kind {
        match self.types[id] {
            TYPE_UNKNOWN | TYPE_CONTROL | TYPE_UNUSED => Kind::Special,
            _ => Kind::Normal,
        }
    }

    /// Byte table: control and user-defined tokens stand for their own text, the rest through `normal`.
    fn pieces(&self, strip_leading_space: bool, normal: impl Fn(&str, &mut Vec<u8>)) -> Pieces {
        let mut pieces = Pieces::new(strip_leading_space);
        for (id, (text, &ty)) in self.tokens.iter().zip(&self.types).enumerate() {
            let kind = self.kind(id);
            if matches!(ty, TYPE_NORMAL | TYPE_BYTE) {
                pieces.push_with(kind, |out| normal(text, out));
            } else {
                pieces.push(kind, text.as_bytes());
            }
        }
        pieces
    }
}

pub(super) fn from_gguf(meta: &Metadata) -> Result<Tokenizer> {
    let model = meta
        .get("tokenizer.ggml.model")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| malformed("`tokenizer.ggml.model` is missing".into()))?;
    let mut vocab = Vocab::read(meta)?;
    let (inner, pieces, default_add_bos, default_bos, default_eos) = match model {
        "gpt2" => {
            let (inner, pieces, add_bos) = byte_level_bpe(meta, &mut vocab)?;
            (inner, pieces, add_bos, None, None)
        }
        "llama" => {
            let (inner, pieces) = sentencepiece(meta, &mut vocab)?;
            (inner, pieces, true, Some(1), Some(2))
        }
        other => {
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer model `{other}`"
            )))
        }
    };
    let n = vocab.len();
    let bos = token_id(meta, "tokenizer.ggml.bos_token_id", n).or(default_bos);
    let add_bos = flag(meta, "tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos);
    let eos = [
        token_id(meta, "tokenizer.ggml.eos_token_id", n).or(default_eos),
        token_id(meta, "tokenizer.ggml.eot_token_id", n),
        token_id(meta, "tokenizer.ggml.eom_token_id", n),
    ];
    Ok(Tokenizer::assemble(inner, pieces, bos, add_bos, eos))
}

fn new_tokenizer(model: BPE, vocab: &Vocab, meta: &Metadata) -> tokenizers::Tokenizer {
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.add_tokens(&vocab.added_tokens(meta));
    inner
}

/// `gpt2`: byte-level BPE with the merges in rank order and llama.cpp's pre-split regexes.
fn byte_level_bpe(
    meta: &Metadata,
    vocab: &mut Vocab,
) -> Result<(tokenizers::Tokenizer, Pieces, bool)> {
    let pre = meta
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("default");
    let split = pre_split(pre)?;
    let raw_merges = array(meta, "tokenizer.ggml.merges")?
        .ok_or_else(|| malformed("`tokenizer.ggml.merges` is missing".into()))?;
    let mut merges = Vec::with_capacity(raw_merges.len());
    let mut seen = HashSet::with_capacity(raw_merges.len());
    for (i, m) in raw_merges.iter().enumerate() {
        let m = m.as_str().ok_or_else(|| {
            malformed(format!("`tokenizer.ggml.merges` entry {i} is not a string"))
        })?;
        // llama.cpp splits at the first space after the first byte, so a merge may start with a space.
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        // A merge whose parts or result are not tokens can never produce a token; the first rank of a pair counts.
        let known = vocab.ids.contains_key(a) && vocab.ids.contains_key(b);
        if known && vocab.ids.contains_key(&format!("{a}{b}")) && seen.insert((a, b)) {
            merges.push((a.to_string(), b.to_string()));
        }
    }
    // The text → id map is only needed to build the model.
    let model = BPE::builder()
        .vocab_and_merges(std::mem::take(&mut vocab.ids), merges)
        .ignore_merges(split.ignore_merges)
        .build()
        .map_err(|e| tok_err("building the BPE model", e))?;
    let mut inner = new_tokenizer(model, vocab, meta);
    let mut steps = Vec::new();
    for re in split.regexes {
        let s = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err("pre-tokenizer regex", e))?;
        steps.push(PreTokenizerWrapper::Split(s));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));
    inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(steps)));
    inner.with_decoder(Some(ByteLevel::new(false, false, false)));
    let pieces = vocab.pieces(false, byte_level_bytes);
    Ok((inner, pieces, split.add_bos))
}

/// `llama` (SentencePiece): llama.cpp merges adjacent symbols by the score of the piece they form, highest first,
/// leftmost on ties. That is BPE whose merges are every pair of pieces forming another piece, ranked by the score
/// of the result (the construction of Hugging Face's SentencePiece converter), with byte fallback for the rest.
fn sentencepiece(meta: &Metadata, vocab: &mut Vocab) -> Result<(tokenizers::Tokenizer, Pieces)> {
    let n = vocab.len();
    let scores = typed_array(meta, "tokenizer.ggml.scores", n, |v| {
        v.as_f64().map(|s| s as f32)
    })?
    .unwrap_or_else(|| vec![0.0; n]);
    // Checking every split of a piece hashes O(len²) bytes; real vocabularies need ~3·10^7 (Gemma's 262k pieces).
    let work: u64 = vocab.ids.keys().map(|p| (p.len() as u64).pow(2)).sum();
    if work > MAX_SPLIT_WORK {
        return Err(Error::Unsupported(format!(
            "SentencePiece vocabulary with pieces this long ({work} split bytes)"
        )));
    }
    let mut candidates: Vec<(f32, u32, u32, u32, &str, &str)> = Vec::new();
    for (piece, &id) in &vocab.ids {
        for (k, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(k);
            if let (Some(&li), Some(&ri)) = (vocab.ids.get(l), vocab.ids.get(r)) {
                candidates.push((scores[id as usize], id, li, ri, l, r));
            }
        }
    }
    candidates.sort_unstable_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3)))
    });
    let merges = candidates
        .into_iter()
        .map(|c| (c.4.to_string(), c.5.to_string()))
        .collect();
    let model = BPE::builder()
        .vocab_and_merges(std::mem::take(&mut vocab.ids), merges)
        .byte_fallback(true)
        .build()
        .map_err(|e| tok_err("building the BPE model", e))?;
    let mut inner = new_tokenizer(model, vocab, meta);

    let add_space_prefix = flag(meta, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norm.push(Prepend::new("▁".into()).into());
    }
    norm.push(
        Replace::new(" ", "▁")
            .map_err(|e| tok_err("normalizer", e))?
            .into(),
    );
    inner.with_normalizer(Some(NormalizerSequence::new(norm)));
    let mut dec: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(|e| tok_err("decoder", e))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(dec)));
    let pieces = vocab.pieces(add_space_prefix, spm_bytes);
    Ok((inner, pieces))
}

#[cfg(test)]
mod tests {
    //! Toy vocabularies whose tokenisation follows by hand from llama.cpp's algorithms.
    use super::*;
    use crate::tokenizer::pieces::{byte_level_printable, BYTE_LEVEL_SHIFTED};

    fn strings(items: &[String]) -> MetaValue {
        MetaValue::Array(items.iter().map(|s| MetaValue::String(s.clone())).collect())
    }

    fn meta(entries: Vec<(&str, MetaValue)>) -> Metadata {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// A SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte pieces, then `pieces` with their scores.
    fn spm(pieces: &[(&str, f32)], user_defined: &[&str], add_space_prefix: bool) -> Metadata {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
        let mut scores = vec![0.0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TYPE_BYTE);
            scores.push(0.0);
        }
        for (p, s) in pieces {
            tokens.push(p.to_string());
            types.push(TYPE_NORMAL);
            scores.push(*s);
        }
        for u in user_defined {
            tokens.push(u.to_string());
            types.push(TYPE_USER_DEFINED);
            scores.push(0.0);
        }
        meta(vec![
            ("tokenizer.ggml.model", MetaValue::String("llama".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            (
                "tokenizer.ggml.token_type",
                MetaValue::Array(
                    types
                        .into_iter()
                        .map(|t| MetaValue::I32(t as i32))
                        .collect(),
                ),
            ),
            (
                "tokenizer.ggml.scores",
                MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()),
            ),
            (
                "tokenizer.ggml.add_space_prefix",
                MetaValue::Bool(add_space_prefix),
            ),
        ])
    }

    fn pieces_of(tok: &Tokenizer, text: &str) -> Vec<String> {
        let ids = tok.encode(text, false).unwrap();
        ids.iter().map(|&id| tok.id_to_token(id).unwrap()).collect()
    }

    #[test]
    fn spm_merges_follow_scores() {
        // "▁abc": "▁a" scores highest, then "bc"; "ab"/"abc" would need "a" and "b" to merge first.
        let vocab = [
            ("▁", -9.0),
            ("a", -9.0),
            ("b", -9.0),
            ("c", -9.0),
            ("▁a", -0.5),
            ("ab", -1.0),
            ("bc", -2.0),
            ("abc", -0.1),
        ];
        let tok = Tokenizer::from_gguf(&spm(&vocab, &[], true)).unwrap();
        assert_eq!(pieces_of(&tok, "abc"), ["▁a", "bc"]);
        // Without "▁a", "ab" goes first and "abc" follows.
        let vocab = [
            ("▁", -9.0),
            ("a", -9.0),
            ("b", -9.0),
            ("c", -9.0),
            ("ab", -1.0),
            ("bc", -2.0),
            ("abc", -0.1),
        ];
        let tok = Tokenizer::from_gguf(&spm(&vocab, &[], true)).unwrap();
        assert_eq!(pieces_of(&tok, "abc"), ["▁", "abc"]);
        assert_eq!(
            tok.decode(&tok.encode("abc", false).unwrap(), false)
                .unwrap(),
            "abc"
        );
    }

    #[test]
    fn spm_ties_merge_leftmost_and_unknown_chars_fall_back_to_bytes() {
        let vocab = [("a", -1.0), ("aa", -2.0), ("▁", -3.0)];
        let tok = Tokenizer::from_gguf(&spm(&vocab, &[], false)).unwrap();
        assert_eq!(pieces_of(&tok, "aaa"), ["aa", "a"]);
        assert_eq!(pieces_of(&tok, "é a"), ["<0xC3>", "<0xA9>", "▁", "a"]);
        assert_eq!(
            tok.decode(&tok.encode("é a", false).unwrap(), false)
                .unwrap(),
            "é a"
        );
        assert_eq!(
            (tok.bos_id(), tok.add_bos_by_default()),
            (Some(1), true),
            "llama.cpp's SentencePiece defaults"
        );
        assert_eq!(tok.eos_ids(), [2]);
    }

    #[test]
    fn spm_user_defined_and_control_tokens_match_raw_text() {
        let vocab = [
            ("▁", -1.0),
            ("a", -2.0),
            ("<", -3.0),
            ("s", -4.0),
            (">", -5.0),
        ];
        let tok = Tokenizer::from_gguf(&spm(&vocab, &["\n\n"], true)).unwrap();
        // Each text fragment after a matched token gets the space prefix again, as in llama.cpp.
        assert_eq!(
            pieces_of(&tok, "a<s>a\n\na"),
            ["▁", "a", "<s>", "▁", "a", "\n\n", "▁", "a"]
        );
        assert!(tok.is_special(1) && !tok.is_special(tok.token_to_id("\n\n").unwrap()));
        let ids = tok.encode("a<s>a", false).unwrap();
        assert_eq!(tok.decode(&ids, true).unwrap(), "a a");
        assert_eq!(tok.decode(&ids, false).unwrap(), "a<s> a");
    }

    /// GPT-2's byte-level character for byte `b`.
    fn byte_char(b: u8) -> char {
        if byte_level_printable(b) {
            b as char
        } else {
            let k = BYTE_LEVEL_SHIFTED.iter().position(|&x| x == b).unwrap();
            char::from_u32(256 + k as u32).unwrap()
        }
    }

    fn gpt2(pre: &str, extra: &[&str], merges: &[&str]) -> Metadata {
        let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
        tokens.extend(extra.iter().map(|s| s.to_string()));
        tokens.push("<|endoftext|>".into());
        let mut types = vec![MetaValue::I32(TYPE_NORMAL as i32); tokens.len() - 1];
        types.push(MetaValue::I32(TYPE_CONTROL as i32));
        let merges: Vec<String> = merges.iter().map(|s| s.to_string()).collect();
        meta(vec![
            ("tokenizer.ggml.model", MetaValue::String("gpt2".into())),
            ("tokenizer.ggml.pre", MetaValue::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.token_type", MetaValue::Array(types)),
            ("tokenizer.ggml.merges", strings(&merges)),
            (
                "tokenizer.ggml.eos_token_id",
                MetaValue::U32(tokens.len() as u32 - 1),
            ),
        ])
    }

    #[test]
    fn byte_level_bpe_merges_in_rank_order() {
        // "é" is the bytes C3 A9, written "Ã©" in the byte-level alphabet.
        let tok = Tokenizer::from_gguf(&gpt2(
            "gpt-2",
            &["he", "ll", "hell", "hello", "Ġw", "Ã©", "ĠwÃ©"],
            &["h e", "l l", "he ll", "hell o", "Ġ w", "Ã ©", "Ġw Ã©"],
        ))
        .unwrap();
        assert_eq!(pieces_of(&tok, "hello wé!"), ["hello", "ĠwÃ©", "!"]);
        // Without a merge, an unmerged character stays as its bytes.
        assert_eq!(pieces_of(&tok, "ü"), ["Ã", "¼"]);
        assert_eq!(
            tok.decode(&tok.encode("hello wé! ü", false).unwrap(), false)
                .unwrap(),
            "hello wé! ü"
        );
        assert_eq!(
            pieces_of(&tok, "hi<|endoftext|>"),
            ["h", "i", "<|endoftext|>"]
        );
        assert!(!tok.add_bos_by_default());
        assert_eq!(
            tok.eos_ids(),
            [256 + 7],
            "<|endoftext|> follows the bytes and the 7 extra tokens"
        );
    }

    #[test]
    fn ignore_merges_takes_whole_words_from_the_vocabulary() {
        // "xyz" is a token that no merge reaches: Llama 3's pre-tokenizer takes it whole, GPT-2's does not.
        let llama3 = Tokenizer::from_gguf(&gpt2("llama-bpe", &["xyz"], &[])).unwrap();
        assert_eq!(pieces_of(&llama3, "xyz"), ["xyz"]);
        let gpt = Tokenizer::from_gguf(&gpt2("gpt-2", &["xyz"], &[])).unwrap();
        assert_eq!(pieces_of(&gpt, "xyz"), ["x", "y", "z"]);
        // smollm splits digits one by one before the GPT-2 regex.
        let smollm = Tokenizer::from_gguf(&gpt2("smollm", &["12"], &["1 2"])).unwrap();
        assert_eq!(pieces_of(&smollm, "12"), ["1", "2"]);
        assert_eq!(pieces_of(&gpt, "12"), ["1", "2"]);
        let gpt = Tokenizer::from_gguf(&gpt2("gpt-2", &["12"], &["1 2"])).unwrap();
        assert_eq!(pieces_of(&gpt, "12"), ["12"]);
    }

    #[test]
    fn bad_metadata_is_an_error() {
        let ok = gpt2("gpt-2", &[], &[]);
        let without = |key: &str| {
            let mut m = ok.clone();
            m.remove(key);
            m
        };
        let with = |key: &str, v: MetaValue| {
            let mut m = ok.clone();
            m.insert(key.to_string(), v);
            m
        };
        let malformed =
            |m: &Metadata| matches!(Tokenizer::from_gguf(m), Err(Error::Malformed { .. }));
        let unsupported =
            |m: &Metadata| matches!(Tokenizer::from_gguf(m), Err(Error::Unsupported(_)));
        assert!(malformed(&without("tokenizer.ggml.tokens")));
        assert!(malformed(&without("tokenizer.ggml.model")));
        assert!(malformed(&without("tokenizer.ggml.merges")));
        assert!(malformed(&with(
            "tokenizer.ggml.tokens",
            MetaValue::String("a".into())
        )));
        assert!(malformed(&with(
            "tokenizer.ggml.tokens",
            MetaValue::Array(vec![])
        )));
        assert!(malformed(&with(
            "tokenizer.ggml.tokens",
            MetaValue::Array(vec![MetaValue::U8(1)])
        )));
        assert!(malformed(&with(
            "tokenizer.ggml.token_type",
            MetaValue::Array(vec![MetaValue::I32(1)])
        )));
        assert!(unsupported(&with(
            "tokenizer.ggml.model",
            MetaValue::String("bert".into())
        )));
        assert!(unsupported(&with(
            "tokenizer.ggml.pre",
            MetaValue::String("tekken".into())
        )));
        let mut short_scores = spm(&[("a", 0.0)], &[], true);
        short_scores.insert(
            "tokenizer.ggml.scores".into(),
            MetaValue::Array(vec![MetaValue::F32(0.0)]),
        );
        assert!(malformed(&short_scores));
        let long = "a".repeat(50_000);
        assert!(
            unsupported(&spm(&[(long.as_str(), 0.0)], &[], true)),
            "a crafted piece would cost O(len²) to split"
        );
        // Out-of-range special ids are ignored, as llama.cpp does.
        let tok = Tokenizer::from_gguf(&with(
            "tokenizer.ggml.bos_token_id",
            MetaValue::U32(1 << 30),
        ))
        .unwrap();
        assert_eq!(tok.bos_id(), None);
    }
}
