//! Tokenizers from Hugging Face tokenizer.json (+ tokenizer_config.json).

use super::pieces::{byte_level_bytes, spm_bytes, Kind, Pieces};
use super::Tokenizer;
use crate::error::{Error, Format, Result};
use serde_json::Value;

fn malformed(detail: String) -> Error {
    Error::Malformed {
        format: Format::Json,
        detail,
    }
}

/// How the tokenizer's decoder turns token strings into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoding {
    /// GPT-2 byte-level alphabet.
    ByteLevel,
    /// SentencePiece style: "▁" is a space, `<0xNN>` a raw byte.
    SentencePiece { strip_leading_space: bool },
}

/// Every `"type"` named anywhere in a serialized component (a `Sequence` nests its parts).
fn find_types<'v>(v: &'v Value, out: &mut Vec<&'v serde_json::Map<String, Value>>) {
    match v {
        Value::Object(map) => {
            if map.contains_key("type") {
                out.push(map);
            }
            map.values().for_each(|x| find_types(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| find_types(x, out)),
        _ => {}
    }
}

fn decoding(decoder: &Value) -> Result<Decoding> {
    let mut parts = Vec::new();
    find_types(decoder, &mut parts);
    let ty = |m: &serde_json::Map<String, Value>| {
        m.get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if parts.iter().any(|m| ty(m) == "ByteLevel") {
        return Ok(Decoding::ByteLevel);
    }
    let spm = parts.iter().any(|m| {
        let t = ty(m);
        t == "ByteFallback"
            || t == "Metaspace"
            || (t == "Replace" && m.get("content").and_then(Value::as_str) == Some(" "))
    });
    if !spm {
        return Err(Error::Unsupported(format!(
            "tokenizer.json decoder {decoder}"
        )));
    }
    let strip_leading_space = parts.iter().any(|m| match ty(m).as_str() {
        "Strip" => {
            m.get("content").and_then(Value::as_str) == Some(" ")
                && m.get("start").and_then(Value::as_u64) >= Some(1)
        }
        "Metaspace" => match m.get("prepend_scheme").and_then(Value::as_str) {
            Some(scheme) => scheme != "never",
            None => m
                .get("add_prefix_space")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        },
        _ => false,
    });
    Ok(Decoding::SentencePiece {
        strip_leading_space,
    })
}

/// The text of a special-token entry of tokenizer_config.json: a string or `{"content": ...}`.
fn config_token<'v>(config: Option<&'v Value>, key: &str) -> Option<&'v str> {
    let v = config?.get(key)?;
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
}

/// The special token a post-processor template puts first (`TemplateProcessing` "single": [{"SpecialToken": ..}, ..]).
fn template_first_special(post: &Value) -> Option<Option<String>> {
    let mut parts = Vec::new();
    find_types(post, &mut parts);
    let template = parts
        .into_iter()
        .find(|m| m.get("type").and_then(Value::as_str) == Some("TemplateProcessing"))?;
    let first = template.get("single")?.as_array()?.first()?;
    Some(
        first
            .get("SpecialToken")
            .and_then(|s| s.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

pub(super) fn from_json(tokenizer_json: &[u8], config: Option<&Value>) -> Result<Tokenizer> {
    let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
        .map_err(|e| malformed(format!("tokenizer.json: {e}")))?;
    let decoder = serde_json::to_value(inner.get_decoder())
        .map_err(|e| malformed(format!("tokenizer.json decoder: {e}")))?;
    let mode = decoding(&decoder)?;

    let vocab = inner.get_vocab(true);
    let max = vocab
        .values()
        .copied()
        .max()
        .ok_or_else(|| malformed("tokenizer.json has no tokens".into()))?;
    // Every id takes at least a byte of the file, which bounds the table before it is allocated.
    if max as usize >= tokenizer_json.len() {
        return Err(malformed(format!(
            "tokenizer.json token id {max} is out of range"
        )));
    }
    let mut by_id: Vec<Option<&str>> = vec![None; max as usize + 1];
    for (text, &id) in &vocab {
        by_id[id as usize] = Some(text);
    }
    let added = inner.get_added_tokens_decoder();
    let strip = matches!(
        mode,
        Decoding::SentencePiece {
            strip_leading_space: true
        }
    );
    let mut pieces = Pieces::new(strip);
    for (id, text) in by_id.iter().enumerate() {
        match (added.get(&(id as u32)), text) {
            (Some(tok), _) => pieces.push(
                if tok.special {
                    Kind::Special
                } else {
                    Kind::Normal
                },
                tok.content.as_bytes(),
            ),
            (None, Some(text)) => pieces.push_with(Kind::Normal, |out| match mode {
                Decoding::ByteLevel => byte_level_bytes(text, out),
                Decoding::SentencePiece { .. } => spm_bytes(text, out),
            }),
            (None, None) => pieces.push(Kind::Missing, &[]),
        }
    }

    let post = serde_json::to_value(inner.get_post_processor()).unwrap_or(Value::Null);
    let template_bos = template_first_special(&post).flatten();
    let bos_text = config_token(config, "bos_token")
        .map(str::to_string)
        .or_else(|| template_bos.clone());
    let bos = bos_text.as_deref().and_then(|t| inner.token_to_id(t));
    let add_bos = match config
        .and_then(|c| c.get("add_bos_token"))
        .and_then(Value::as_bool)
    {
        Some(flag) => flag,
        None => template_bos.is_some() && template_bos == bos_text,
    };
    let eos = match config_token(config, "eos_token") {
        Some(text) => vec![inner.token_to_id(text)],
        None => ["</s>", "<eos>"]
            .iter()
            .map(|t| inner.token_to_id(t).filter(|&id| pieces.is_special(id)))
            .collect(),
    };
    Ok(Tokenizer::assemble(inner, pieces, bos, add_bos, eos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decoder_kinds() {
        let bl = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
        assert_eq!(decoding(&bl).unwrap(), Decoding::ByteLevel);
        let llama2 = json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
        assert_eq!(
            decoding(&llama2).unwrap(),
            Decoding::SentencePiece {
                strip_leading_space: true
            }
        );
        let gemma = json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]});
        assert_eq!(
            decoding(&gemma).unwrap(),
            Decoding::SentencePiece {
                strip_leading_space: false
            }
        );
        let wordpiece = json!({"type": "WordPiece", "prefix": "##", "cleanup": true});
        assert!(matches!(decoding(&wordpiece), Err(Error::Unsupported(_))));
    }

    #[test]
    fn template_bos() {
        let post = json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {}});
        assert_eq!(
            template_first_special(&post),
            Some(Some("<|begin_of_text|>".into()))
        );
        let plain = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
        assert_eq!(template_first_special(&plain), None);
    }
}
