//! The raw bytes each token id stands for, so decoding can work below the character level.

use crate::error::{Error, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    /// No token has this id (a gap in a tokenizer.json vocabulary).
    Missing,
    Normal,
    /// Control tokens: left out when decoding with `skip_special`.
    Special,
}

/// All token byte strings in one buffer, indexed by id.
pub(super) struct Pieces {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    kinds: Vec<Kind>,
    /// SentencePiece vocabularies that add a "▁" before the text drop one leading space when decoding.
    strip_leading_space: bool,
}

impl Pieces {
    pub(super) fn new(strip_leading_space: bool) -> Self {
        Pieces {
            bytes: Vec::new(),
            ends: Vec::new(),
            kinds: Vec::new(),
            strip_leading_space,
        }
    }

    /// Appends the next id.
    pub(super) fn push(&mut self, kind: Kind, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        self.ends.push(self.bytes.len());
        self.kinds.push(kind);
    }

    /// Appends the next id, with the bytes written by `fill`.
    pub(super) fn push_with(&mut self, kind: Kind, fill: impl FnOnce(&mut Vec<u8>)) {
        fill(&mut self.bytes);
        self.ends.push(self.bytes.len());
        self.kinds.push(kind);
    }

    pub(super) fn len(&self) -> usize {
        self.kinds.len()
    }

    pub(super) fn strips_leading_space(&self) -> bool {
        self.strip_leading_space
    }

    pub(super) fn is_special(&self, id: u32) -> bool {
        self.kinds.get(id as usize) == Some(&Kind::Special)
    }

    /// The bytes of `id` (empty for a special token when `skip_special`).
    pub(super) fn bytes(&self, id: u32, skip_special: bool) -> Result<&[u8]> {
        let i = id as usize;
        match self.kinds.get(i) {
            None | Some(Kind::Missing) => Err(Error::Tokenizer(format!(
                "token id {id} is not in the vocabulary ({} ids)",
                self.len()
            ))),
            Some(Kind::Special) if skip_special => Ok(&[]),
            Some(_) => {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                Ok(&self.bytes[start..self.ends[i]])
            }
        }
    }
}

/// The bytes GPT-2's byte-level alphabet maps to characters 256.. (the unprintable ones), in order.
pub(super) const BYTE_LEVEL_SHIFTED: [u8; 68] = {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !byte_level_printable(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

pub(super) const fn byte_level_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Appends the bytes a GPT-2 byte-level token string stands for. Characters outside the byte alphabet (which a
/// well-formed vocabulary never has) are kept as their UTF-8.
pub(super) fn byte_level_bytes(token: &str, out: &mut Vec<u8>) {
    for c in token.chars() {
        let code = c as u32;
        if code < 256 && byte_level_printable(code as u8) {
            out.push(code as u8);
        } else if let Some(&b) = code
            .checked_sub(256)
            .and_then(|k| BYTE_LEVEL_SHIFTED.get(k as usize))
        {
            out.push(b);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// The byte of a SentencePiece byte-fallback piece `<0xNN>`.
pub(super) fn byte_piece(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Appends the bytes of a SentencePiece piece: "▁" is a space, `<0xNN>` one raw byte.
pub(super) fn spm_bytes(token: &str, out: &mut Vec<u8>) {
    match byte_piece(token) {
        Some(b) => out.push(b),
        None => {
            let mut rest = token;
            while let Some(pos) = rest.find('▁') {
                out.extend_from_slice(&rest.as_bytes()[..pos]);
                out.push(b' ');
                rest = &rest[pos + '▁'.len_utf8()..];
            }
            out.extend_from_slice(rest.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_round_trips() {
        // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256, 257, ... in byte order.
        let mut out = Vec::new();
        byte_level_bytes("Ġ", &mut out); // U+0120 = 256 + 32 → the 33rd unprintable byte, b' '
        byte_level_bytes("Ċ", &mut out); // U+010A = 256 + 10 → b'\n'
        byte_level_bytes("hi", &mut out);
        byte_level_bytes("\u{0100}", &mut out); // → 0x00
        byte_level_bytes("\u{0143}", &mut out); // 256 + 67 → 0xAD (soft hyphen)
        byte_level_bytes("ä", &mut out); // U+00E4 is printable → the single byte 0xE4
        assert_eq!(out, [b' ', b'\n', b'h', b'i', 0x00, 0xAD, 0xE4]);
    }

    #[test]
    fn spm_pieces() {
        let mut out = Vec::new();
        spm_bytes("▁Hello", &mut out);
        spm_bytes("<0xE2>", &mut out);
        spm_bytes("a▁▁b", &mut out);
        assert_eq!(out, b" Hello\xE2a  b");
        assert_eq!(byte_piece("<0x0a>"), Some(10));
        assert_eq!(byte_piece("<0x0A"), None);
        assert_eq!(byte_piece("<0x100>"), None);
    }

    #[test]
    fn pieces_lookup() {
        let mut p = Pieces::new(false);
        p.push(Kind::Special, b"<s>");
        p.push(Kind::Missing, b"");
        p.push(Kind::Normal, b"ab");
        assert_eq!(p.bytes(0, false).unwrap(), b"<s>");
        assert_eq!(p.bytes(0, true).unwrap(), b"");
        assert!(p.bytes(1, false).is_err());
        assert_eq!(p.bytes(2, true).unwrap(), b"ab");
        assert!(p.bytes(3, false).is_err());
        assert!(p.is_special(0) && !p.is_special(2) && !p.is_special(7));
    }
}
