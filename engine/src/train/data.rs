//! From instruction records to training examples, as *Build a Large Language Model From Scratch*, ch. 7 does it: a
//! prompt style (the model's own chat template, Alpaca, or Phi-3), the response after it, the end token appended;
//! targets are the inputs shifted by one, with the end token the last target; the instruction's targets are masked
//! when asked (exercise 7.2); examples longer than the maximum are cut. Padding is not needed: each sequence runs
//! alone ([`super::pass`]), which gives exactly the loss and gradients of ch. 7's padded batch, whose padding is
//! never attended to by a real token and never scored after the first end token.

use super::pass::Example;
use crate::chat::{ChatTemplate, Message};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// One instruction, its optional input, and the response to learn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub instruction: String,
    #[serde(default)]
    pub input: String,
    pub output: String,
}

/// Dataset rows (ShareGPT, OpenAI messages or Alpaca, as Magpie exports them) as records: each row's first
/// instruction and reply; rows without both are left out.
pub fn records_from_rows(rows: &[dataset::Row]) -> Vec<Record> {
    rows.iter()
        .filter(|r| !r.instruction.trim().is_empty() && !r.response.trim().is_empty())
        .map(|r| Record { instruction: r.instruction.clone(), input: String::new(), output: r.response.clone() })
        .collect()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    /// The model's own chat template: a user turn, then the assistant's reply, ended by the turn's end token.
    #[default]
    Chat,
    /// ch. 7's Alpaca prompt.
    Alpaca,
    /// ch. 7's exercise 7.1: Phi-3's prompt.
    Phi3,
}

impl std::str::FromStr for PromptStyle {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "chat" => Ok(Self::Chat),
            "alpaca" => Ok(Self::Alpaca),
            "phi3" | "phi-3" => Ok(Self::Phi3),
            other => Err(Error::InvalidArgument(format!("unknown prompt style `{other}`: chat, alpaca or phi3"))),
        }
    }
}

/// Ch. 7's `format_input`: the Alpaca preamble, the instruction and the input (when there is one).
pub fn alpaca_input(r: &Record) -> String {
    let mut text = format!(
        "Below is an instruction that describes a task. Write a response that appropriately completes the \
         request.\n\n### Instruction:\n{}",
        r.instruction
    );
    if !r.input.is_empty() {
        text.push_str(&format!("\n\n### Input:\n{}", r.input));
    }
    text
}

/// The prompt's text before the response, and the response's text, in `style`.
pub fn format(style: PromptStyle, template: &ChatTemplate, r: &Record) -> Result<(String, String)> {
    Ok(match style {
        PromptStyle::Alpaca => (format!("{}\n\n### Response:\n", alpaca_input(r)), r.output.clone()),
        PromptStyle::Phi3 => {
            let mut prompt = format!("<|user|>\n{}", r.instruction);
            if !r.input.is_empty() {
                prompt.push_str(&format!("\n{}", r.input));
            }
            prompt.push_str("\n\n<|assistant|>\n");
            (prompt, r.output.clone())
        }
        PromptStyle::Chat => {
            let user = if r.input.is_empty() { r.instruction.clone() } else { format!("{}\n\n{}", r.instruction, r.input) };
            (template.render(&[Message::new("user", user)], true)?, r.output.clone())
        }
    })
}

/// The end-of-turn markers of the chat formats (Llama 3, ChatML, Phi-3, Gemma), in the order they are looked for.
const TURN_ENDS: [&str; 5] = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|eom_id|>"];

/// The token a response ends with: the chat format's end of turn in the chat style (when the tokenizer has one
/// among its end ids; else its first end id), the end-of-text token otherwise (ch. 7's <|endoftext|>).
pub fn end_token(tokenizer: &Tokenizer, style: PromptStyle) -> Result<u32> {
    let ends = tokenizer.eos_ids();
    // A chat reply ends with the turn's end marker, as the template writes it after an assistant message
    // (SmolLM2's <|im_end|>, not its <|endoftext|>); the other styles with the model's own end of text.
    let turn_end = TURN_ENDS.iter().filter_map(|t| tokenizer.token_to_id(t)).find(|id| ends.contains(id));
    let id = match style {
        PromptStyle::Chat => turn_end.as_ref().or(ends.first()),
        PromptStyle::Alpaca | PromptStyle::Phi3 => ends.first(),
    };
    id.copied().ok_or_else(|| Error::Tokenizer("the tokenizer names no end token to end a response with".into()))
}

/// How an example was built.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub example: Example,
    /// Whether it was cut to the maximum length.
    pub truncated: bool,
}

/// Prompt + response + end token as inputs and shifted targets; the first `prompt tokens − 1` targets (those that
/// predict the prompt's own tokens) are masked with `mask_instruction`; cut to `max_len` inputs.
pub fn encode(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    style: PromptStyle,
    record: &Record,
    mask_instruction: bool,
    max_len: usize,
) -> Result<Encoded> {
    let (prompt, response) = format(style, template, record)?;
    // The chat template writes BOS itself; the other styles start with it, as prompts of the model do.
    let add_bos = style != PromptStyle::Chat && tokenizer.add_bos_by_default();
    let prompt_ids = tokenizer.encode(&prompt, add_bos)?;
    let mut ids = prompt_ids.clone();
    ids.extend(tokenizer.encode(&response, false)?);
    ids.push(end_token(tokenizer, style)?);
    Ok(shift(&ids, prompt_ids.len(), mask_instruction, max_len))
}

/// ch. 7's collate for one sequence of `ids` (which ends with the end token).
pub fn shift(ids: &[u32], prompt_len: usize, mask_instruction: bool, max_len: usize) -> Encoded {
    let n = ids.len().saturating_sub(1);
    let mut inputs = ids[..n].to_vec();
    let mut targets: Vec<Option<u32>> = ids[1..].iter().map(|&t| Some(t)).collect();
    if mask_instruction {
        for t in targets.iter_mut().take(prompt_len.saturating_sub(1)) {
            *t = None;
        }
    }
    let truncated = inputs.len() > max_len;
    inputs.truncate(max_len);
    targets.truncate(max_len);
    Encoded { example: Example { inputs, targets }, truncated }
}

/// Splits `n` records into (training, validation) index lists: a seeded shuffle, then the last `fraction` (at least
/// one when there are two or more records and the fraction is above 0) for validation.
pub fn split(n: usize, fraction: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, seed);
    let val = if fraction > 0.0 && n >= 2 { ((n as f32 * fraction).round() as usize).clamp(1, n - 1) } else { 0 };
    let validation = order.split_off(n - val);
    (order, validation)
}

/// Fisher–Yates with a xorshift generator: the same order for the same seed on every machine.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_follows_chapter_7() {
        // prompt 1 2 3, response 4 5, end 9.
        let e = shift(&[1, 2, 3, 4, 5, 9], 3, false, 100);
        assert_eq!(e.example.inputs, vec![1, 2, 3, 4, 5]);
        assert_eq!(e.example.targets, vec![Some(2), Some(3), Some(4), Some(5), Some(9)]);
        let masked = shift(&[1, 2, 3, 4, 5, 9], 3, true, 100);
        assert_eq!(masked.example.targets, vec![None, None, Some(4), Some(5), Some(9)]);
        let cut = shift(&[1, 2, 3, 4, 5, 9], 3, false, 3);
        assert!(cut.truncated);
        assert_eq!(cut.example.inputs, vec![1, 2, 3]);
        assert_eq!(cut.example.targets.len(), 3);
    }

    #[test]
    fn split_is_seeded_and_covers_everything() {
        let (t, v) = split(10, 0.2, 7);
        assert_eq!((t.len(), v.len()), (8, 2));
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(split(10, 0.2, 7), (t, v));
        assert_ne!(split(10, 0.2, 8).1, split(10, 0.2, 7).1);
        assert_eq!(split(1, 0.5, 1).1.len(), 0);
    }

    #[test]
    fn alpaca_and_phi3_prompts_are_chapter_7s() {
        let r = Record { instruction: "Fix: 'ocassion'".into(), input: String::new(), output: "occasion".into() };
        let t = ChatTemplate::builtin(crate::chat::Builtin::ChatMl, "", "");
        let (p, out) = format(PromptStyle::Alpaca, &t, &r).unwrap();
        assert!(p.starts_with("Below is an instruction that describes a task."), "{p}");
        assert!(p.ends_with("### Instruction:\nFix: 'ocassion'\n\n### Response:\n"), "{p}");
        assert_eq!(out, "occasion");
        let with_input = Record { input: "word".into(), ..r.clone() };
        assert!(format(PromptStyle::Alpaca, &t, &with_input).unwrap().0.contains("\n\n### Input:\nword\n\n### Response:\n"));
        assert_eq!(format(PromptStyle::Phi3, &t, &r).unwrap().0, "<|user|>\nFix: 'ocassion'\n\n<|assistant|>\n");
    }
}
