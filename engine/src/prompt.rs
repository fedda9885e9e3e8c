//! From a conversation to prompt ids, the same way in every front end (the `aviary` CLI and the browser worker), so
//! the browser's answer can be compared with the CLI's token for token.

use crate::chat::{Builtin, ChatTemplate, Message};
use crate::config::Arch;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The model's own chat template, or the built-in one for its family when the file carries none.
pub fn chat_template(
    own: Option<&ChatTemplate>,
    tokenizer: &Tokenizer,
    arch: Arch,
) -> ChatTemplate {
    if let Some(t) = own {
        return t.clone();
    }
    let token = |id: Option<u32>| {
        id.and_then(|i| tokenizer.id_to_token(i))
            .unwrap_or_default()
    };
    let bos = token(tokenizer.bos_id());
    let eos = token(tokenizer.eos_ids().first().copied());
    ChatTemplate::builtin(builtin_for(arch, tokenizer), &bos, &eos)
}

/// Which built-in template a model without its own would use.
pub fn builtin_for(arch: Arch, tokenizer: &Tokenizer) -> Builtin {
    match arch {
        Arch::Gemma2 | Arch::Gemma3 => Builtin::Gemma,
        Arch::Llama if tokenizer.token_to_id("<|start_header_id|>").is_some() => Builtin::Llama3,
        Arch::Llama => Builtin::ChatMl,
    }
}

/// Prompt ids for the assistant's next turn after `messages` (the template writes BOS itself).
pub fn encode_chat(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[Message],
) -> Result<Vec<u32>> {
    let ids = tokenizer.encode(&template.render(messages, true)?, false)?;
    if ids.is_empty() {
        return Err(Error::InvalidArgument(
            "the prompt is empty after tokenisation".into(),
        ));
    }
    Ok(ids)
}
