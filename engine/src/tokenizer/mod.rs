//! Tokenizers: a `tokenizers::Tokenizer` built from tokenizer.json or from a GGUF vocabulary (byte-level BPE or
//! SentencePiece), plus the special ids generation needs and streaming detokenisation.
//!
//! Decoding goes through a per-token byte table rather than the crate's decoders: a token may carry part of a UTF-8
//! character (byte-fallback `<0xE2>`, byte-level BPE pieces), and only raw bytes let the stream wait for the rest of
//! the character instead of emitting U+FFFD.

mod gguf;
mod hf;
mod pieces;
mod stream;

pub use stream::Detokenizer;

use crate::error::{Error, Result};
use pieces::Pieces;

/// Tokens that end a turn in the chat formats Aviary meets, besides the declared eos/eot ids (llama.cpp's list of
/// end-of-generation texts, limited to those families).
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pieces: Pieces,
    bos: Option<u32>,
    add_bos: bool,
    eos: Vec<u32>,
}

impl Tokenizer {
    /// tokenizer.json bytes, plus tokenizer_config.json when present (for bos/eos tokens, add_bos_token).
    pub fn from_json(
        tokenizer_json: &[u8],
        tokenizer_config: Option<&serde_json::Value>,
    ) -> Result<Self> {
        hf::from_json(tokenizer_json, tokenizer_config)
    }

    /// From GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(meta: &crate::format::Metadata) -> Result<Self> {
        gguf::from_gguf(meta)
    }

    /// Assembles the parts; the end-of-turn control tokens present in the vocabulary are appended to `eos`.
    fn assemble(
        inner: tokenizers::Tokenizer,
        pieces: Pieces,
        bos: Option<u32>,
        add_bos: bool,
        eos: impl IntoIterator<Item = Option<u32>>,
    ) -> Self {
        let mut ids: Vec<u32> = Vec::new();
        let vocab = pieces.len();
        let turn_ends = END_OF_TURN_TEXTS
            .iter()
            .map(|t| inner.token_to_id(t).filter(|&id| pieces.is_special(id)));
        for id in eos.into_iter().chain(turn_ends).flatten() {
            if (id as usize) < vocab && !ids.contains(&id) {
                ids.push(id);
            }
        }
        let bos = bos.filter(|&b| (b as usize) < vocab);
        Tokenizer {
            inner,
            pieces,
            add_bos: add_bos && bos.is_some(),
            bos,
            eos: ids,
        }
    }

    /// Control/special tokens written in `text` (e.g. "<|im_start|>", "<start_of_turn>") become their ids. With
    /// `add_bos`, the BOS id (if the vocabulary has one) comes first.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids = encoding.get_ids();
        let mut out = Vec::with_capacity(ids.len() + 1);
        if add_bos {
            if let Some(bos) = self.bos {
                out.push(bos);
            }
        }
        out.extend_from_slice(ids);
        Ok(out)
    }

    /// Text of `ids`; invalid UTF-8 (a byte token without the rest of its character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.pieces.bytes(id, skip_special)?);
        }
        let start = usize::from(self.pieces.strips_leading_space() && bytes.first() == Some(&b' '));
        Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
    }

    /// Number of token ids (the embedding rows the vocabulary addresses).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Whether prompts of this model start with BOS.
    pub fn add_bos_by_default(&self) -> bool {
        self.add_bos
    }

    /// Ids that end generation: eos, eot and the end-of-turn tokens of the chat formats present in the vocabulary.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Control tokens (skipped when decoding with `skip_special`).
    pub fn is_special(&self, id: u32) -> bool {
        self.pieces.is_special(id)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn pieces(&self) -> &Pieces {
        &self.pieces
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("add_bos", &self.add_bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{what}: {e}"))
}
