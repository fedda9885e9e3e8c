//! The checks a decoded state passes before the app sees it, and that [`crate::encode`] applies too, so no link this
//! crate makes is one it would refuse.

use crate::{Error, ModelSource, Result, ShareState};
use engine::sampling::SamplingParams;

/// Messages in one conversation.
pub const MAX_MESSAGES: usize = 1000;
/// One message's text: far beyond any reply a browser model writes in one go.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The system prompt and Magpie's prompts.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Display names, a catalog id, Magpie's model name.
pub const MAX_NAME_BYTES: usize = 256;
/// Browsers and servers handle URLs of this size everywhere (RFC 9110 asks for 8,000 octets).
pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_ADAPTERS: usize = 16;
/// Max tokens of a reply or step: more than any context window the app loads.
pub const MAX_TOKENS_CAP: u32 = 1 << 20;
/// Counts held in `usize` (top-k, repeat window, chunk size): a wasm32 `usize` holds no more than this, and a
/// native one must refuse what the browser would, so a link means the same everywhere.
pub const MAX_COUNT: usize = u32::MAX as usize;
/// A model or adapter's stated size; only displayed, but a stated terabyte is a lie worth refusing.
pub const MAX_SIZE_BYTES: u64 = 1 << 40;

/// Synthesis's chunk size: the app's own lower bound (fewer tokens leave no room for a question).
const MIN_CHUNK_TOKENS: usize = 16;
/// Pairs per chunk: the synthesis panel's range.
const MAX_PAIRS: usize = 32;
const MAX_SCALE: f32 = 2.0;

pub(crate) fn validate(s: &ShareState) -> Result<()> {
    check_version(u64::from(s.version))?;
    if let Some(model) = &s.model {
        match &model.source {
            ModelSource::Url(u) => http_url("the model's URL", u)?,
            ModelSource::Catalog(id) => catalog_id("the model", id)?,
        }
        if let Some(name) = &model.name {
            text("the model's name", name, MAX_NAME_BYTES)?;
        }
        size("the model's size", model.size_bytes)?;
    }
    if s.adapters.len() > MAX_ADAPTERS {
        return Err(Error::TooManyAdapters { count: s.adapters.len(), max: MAX_ADAPTERS });
    }
    for (i, a) in s.adapters.iter().enumerate() {
        let n = i + 1;
        http_url(&format!("adapter {n}'s URL"), &a.url)?;
        text(&format!("adapter {n}'s name"), &a.name, MAX_NAME_BYTES)?;
        if !(0.0..=MAX_SCALE).contains(&a.scale) {
            return out_of_range(format!("adapter {n}'s scale"), format!("{} is not between 0 and 2", a.scale));
        }
        size(&format!("adapter {n}'s size"), a.size_bytes)?;
    }
    text("the system prompt", &s.system_prompt, MAX_PROMPT_BYTES)?;
    if s.messages.len() > MAX_MESSAGES {
        return Err(Error::TooManyMessages { count: s.messages.len(), max: MAX_MESSAGES });
    }
    for (i, m) in s.messages.iter().enumerate() {
        text(&format!("message {}", i + 1), &m.text, MAX_MESSAGE_BYTES)?;
    }
    sampling("the sampling settings", &s.sampling)?;
    count("top-k", s.sampling.top_k, 0, MAX_COUNT)?;
    count("the repeat window", s.sampling.repeat_last_n, 0, MAX_COUNT)?;
    max_tokens("max tokens", s.max_tokens as usize)?;
    if let Some(m) = &s.magpie {
        m.validate().or_else(|e| out_of_range("the Magpie settings".into(), engine_detail(e)))?;
        text("Magpie's pre-query template", &m.pre_query_template, MAX_PROMPT_BYTES)?;
        if let Some(p) = &m.system_prompt {
            text("Magpie's system prompt", p, MAX_PROMPT_BYTES)?;
        }
        text("Magpie's model name", &m.model, MAX_NAME_BYTES)?;
        max_tokens("Magpie's instruction max tokens", m.instruction.max_tokens)?;
        max_tokens("Magpie's response max tokens", m.response.max_tokens)?;
    }
    if let Some(y) = &s.synthesis {
        count("synthesis's chunk size", y.chunk_tokens, MIN_CHUNK_TOKENS, MAX_COUNT)?;
        count("synthesis's pairs per chunk", y.pairs, 1, MAX_PAIRS)?;
        max_tokens("synthesis's max tokens", y.max_tokens)?;
        let p = SamplingParams { temperature: y.temperature, top_p: y.top_p, ..SamplingParams::default() };
        sampling("synthesis's sampling", &p)?;
    }
    Ok(())
}

/// Shared by the fragment's tag and the JSON's `version`, so an old app names a newer link as such whichever it
/// reads first.
pub(crate) fn check_version(found: u64) -> Result<()> {
    if found > u64::from(crate::VERSION) {
        Err(Error::NewerVersion { found, supported: crate::VERSION })
    } else if found != u64::from(crate::VERSION) {
        Err(Error::UnknownVersion(found))
    } else {
        Ok(())
    }
}

/// Parsed as a browser would (the WHATWG rules, which also strip the leading spaces and tabs that hide
/// `javascript:`), so the scheme judged is the one `fetch` would use.
fn http_url(field: &str, u: &str) -> Result<()> {
    text(field, u, MAX_URL_BYTES)?;
    match url::Url::parse(u) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(()),
        _ => Err(Error::NotHttpUrl { field: field.into() }),
    }
}

/// A relative path the app resolves against its own origin. No scheme (`:`), no leading `/` (which with a second
/// one would name another host), no `..`, and a plain alphabet, so it cannot leave the app's folder.
fn catalog_id(field: &str, id: &str) -> Result<()> {
    text(field, id, MAX_NAME_BYTES)?;
    let plain = id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
    // An empty part also catches the empty id and a leading or doubled `/`.
    if !plain || id.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(Error::BadCatalogId { field: field.into() });
    }
    Ok(())
}

fn text(field: &str, t: &str, max: usize) -> Result<()> {
    if t.len() > max {
        return Err(Error::TextTooLong { field: field.into(), len: t.len(), max });
    }
    Ok(())
}

fn size(field: &str, bytes: Option<u64>) -> Result<()> {
    match bytes {
        Some(b) if b == 0 || b > MAX_SIZE_BYTES => out_of_range(field.into(), format!("{b} bytes")),
        _ => Ok(()),
    }
}

fn count(field: &str, n: usize, min: usize, max: usize) -> Result<()> {
    if !(min..=max).contains(&n) {
        return out_of_range(field.into(), format!("{n} is not between {min} and {max}"));
    }
    Ok(())
}

fn max_tokens(field: &str, n: usize) -> Result<()> {
    count(field, n, 1, MAX_TOKENS_CAP as usize)
}

fn sampling(field: &str, p: &SamplingParams) -> Result<()> {
    p.validate().or_else(|e| out_of_range(field.into(), engine_detail(e)))
}

/// The engine's message without its "invalid argument:" prefix, which means nothing to the person reading it.
fn engine_detail(e: engine::Error) -> String {
    match e {
        engine::Error::InvalidArgument(detail) => detail,
        other => other.to_string(),
    }
}

fn out_of_range(field: String, detail: String) -> Result<()> {
    Err(Error::OutOfRange { field, detail })
}
