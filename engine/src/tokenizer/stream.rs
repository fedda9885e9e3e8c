//! Streaming detokenisation: text is released only as whole UTF-8 characters.

use super::Tokenizer;
use crate::error::Result;

/// Turns ids into text one at a time. A character split over several tokens (byte-fallback `<0xE2>` pieces,
/// byte-level BPE pieces) is held back until complete; bytes that can never form a character are dropped, so no
/// chunk contains U+FFFD. For valid UTF-8 the chunks concatenate to `Tokenizer::decode` of the same ids.
pub struct Detokenizer<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    pending: Vec<u8>,
    /// Whether the next non-empty piece is the start of the text (where SentencePiece's added space is dropped).
    at_start: bool,
}

impl<'a> Detokenizer<'a> {
    /// For a whole text: decodes like `Tokenizer::decode`.
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        Detokenizer {
            tok,
            skip_special,
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// For text that continues earlier tokens (a generated reply after its prompt): the first piece keeps its
    /// leading space, which `new` would drop for SentencePiece vocabularies that add one.
    pub fn continuing(tok: &'a Tokenizer, skip_special: bool) -> Self {
        Detokenizer {
            tok,
            skip_special,
            pending: Vec::new(),
            at_start: false,
        }
    }

    /// The text that `id` completes (maybe "").
    pub fn push(&mut self, id: u32) -> Result<String> {
        let mut bytes = self.tok.pieces().bytes(id, self.skip_special)?;
        if self.at_start && !bytes.is_empty() {
            self.at_start = false;
            if self.tok.pieces().strips_leading_space() && bytes[0] == b' ' {
                bytes = &bytes[1..];
            }
        }
        self.pending.extend_from_slice(bytes);
        Ok(self.take_complete(false))
    }

    /// The end of the stream: whatever complete text is left; an unfinished character is dropped.
    pub fn finish(&mut self) -> Result<String> {
        Ok(self.take_complete(true))
    }

    fn take_complete(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        let mut pos = 0;
        loop {
            match std::str::from_utf8(&self.pending[pos..]) {
                Ok(s) => {
                    out.push_str(s);
                    pos = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix was just validated, so the fallback never happens.
                    out.push_str(
                        std::str::from_utf8(&self.pending[pos..pos + valid]).unwrap_or_default(),
                    );
                    pos += valid;
                    match e.error_len() {
                        Some(bad) => pos += bad,
                        None if at_end => {
                            pos = self.pending.len();
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..pos);
        out
    }
}
