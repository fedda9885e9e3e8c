//! Chat templates: a model's Jinja template rendered with minijinja exactly as Hugging Face transformers renders it
//! (`apply_chat_template`), plus the Magpie pre-query template derived from it.
//!
//! transformers compiles templates in a sandboxed Jinja2 environment with `trim_blocks`, `lstrip_blocks`, the loop
//! controls and `{% generation %}` extensions, and the globals `raise_exception` and `strftime_now`; its `tojson`
//! is `json.dumps` without HTML escaping. The same environment is rebuilt here; Python's own behaviour (printing
//! `None`/`True`, `str.strip`, `repr`, …) lives in `chat/python.rs`.

mod clock;
mod python;

pub use clock::strftime;

use crate::error::Format;
use crate::format::{MetaValue, Metadata};
use crate::{Error, Result};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use std::collections::BTreeMap;

/// One chat message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Templates for models that ship none (see MODELS.md "Chat templates").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Plain ChatML (`<|im_start|>role\n…<|im_end|>\n`), no default system message.
    ChatMl,
    /// Meta-Llama-3-8B-Instruct's template.
    Llama3,
    /// Gemma 3's template (a system message is merged into the first user turn).
    Gemma,
}

impl Builtin {
    /// The Jinja source. The files are shared with tests/fixtures/chat/gen_chat_refs.py, which renders them with
    /// transformers for the reference outputs.
    pub fn source(self) -> &'static str {
        match self {
            Builtin::ChatMl => include_str!("chat/builtin-chatml.jinja"),
            Builtin::Llama3 => include_str!("chat/builtin-llama3.jinja"),
            Builtin::Gemma => include_str!("chat/builtin-gemma.jinja"),
        }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// Instruction budget for one render. The reference templates need under 20,000 for the test conversations;
/// Gemma 4's template scans backwards over earlier messages for every message (quadratic), and a 2,000-message chat
/// still fits. The bound stops a hostile template (nested `range` loops) within a second or two.
const FUEL: u64 = 20_000_000;

/// Text that a template cannot plausibly contain, marking where the user's message starts.
const SENTINEL: &str = "AviaryPreQuerySentinel7d1f3c";

/// A compiled chat template with the bos/eos strings it is rendered with.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// What `raise_exception(msg)` fails with, so the message can be told apart from minijinja's own errors.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedException(message)),
    )
}

fn strftime_now(format: String) -> String {
    clock::strftime(&format, clock::unix_now())
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_debug(false);
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(python::unknown_method);
    env.set_formatter(python::formatter);
    env.add_filter("tojson", python::tojson);
    env.add_filter("trim", python::trim_filter);
    env.add_filter("string", python::string_filter);
    env.add_filter("length", python::length_filter);
    env.add_filter("count", python::length_filter);
    env.add_filter("round", python::round_filter);
    env.add_test("number", python::is_number);
    env.add_test("sequence", python::is_sequence);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// transformers' `{% generation %}…{% endgeneration %}` extension (it marks assistant text for training masks) renders
/// its body in a scope of its own; `{% with %}…{% endwith %}` does the same in minijinja, so the tags are renamed,
/// keeping their whitespace-control markers.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let body = inner
            .trim_start_matches(['-', '+'])
            .trim_end_matches(['-', '+']);
        let replacement = match body.trim() {
            "generation" => Some("with"),
            "endgeneration" => Some("endwith"),
            _ => None,
        };
        match replacement {
            Some(word) => {
                let word_at = inner.find(body.trim()).unwrap_or(0);
                out.push_str("{%");
                out.push_str(&inner[..word_at]);
                out.push_str(word);
                out.push_str(&inner[word_at + body.trim().len()..]);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The message of a minijinja error: the template's own text for `raise_exception`, else minijinja's description with
/// its location.
fn template_error(err: minijinja::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Error::Template(raised.0.clone());
        }
        source = e.source();
    }
    Error::Template(err.to_string())
}

impl ChatTemplate {
    /// Compiles `source` once; a syntax error is an `Error::Template` naming the line.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        let mut env = environment();
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(&source))
            .map_err(|e| {
                let line = e
                    .line()
                    .map(|l| format!(" at line {l}"))
                    .unwrap_or_default();
                let detail = e
                    .detail()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.kind().to_string());
                Error::Template(format!("syntax error{line}: {detail}"))
            })?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// A built-in template; its sources are known to compile.
    pub fn builtin(b: Builtin, bos_token: &str, eos_token: &str) -> Self {
        match Self::new(b.source(), bos_token, eos_token) {
            Ok(t) => t,
            Err(e) => panic!("built-in chat template {b:?} does not compile: {e}"),
        }
    }

    /// GGUF: `tokenizer.chat_template` with the strings of the `tokenizer.ggml.bos_token_id` / `eos_token_id` tokens
    /// (empty when an id is absent). `None` if the file has no template.
    pub fn from_gguf(meta: &Metadata) -> Result<Option<Self>> {
        let malformed = |detail: String| Error::Malformed {
            format: Format::Gguf,
            detail,
        };
        let source = match meta.get("tokenizer.chat_template") {
            None => return Ok(None),
            Some(MetaValue::String(s)) => s.clone(),
            Some(_) => return Err(malformed("tokenizer.chat_template is not a string".into())),
        };
        let token = |key: &str| -> Result<String> {
            let Some(id) = meta.get(key) else {
                return Ok(String::new());
            };
            let id = id
                .as_u64()
                .ok_or_else(|| malformed(format!("{key} is not an unsigned integer")))?;
            let tokens = meta
                .get("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .ok_or_else(|| {
                    malformed("tokenizer.ggml.tokens is missing or not an array".into())
                })?;
            let tok = usize::try_from(id).ok().and_then(|i| tokens.get(i));
            match tok {
                Some(MetaValue::String(s)) => Ok(s.clone()),
                Some(_) => Err(malformed(format!(
                    "token {id} of tokenizer.ggml.tokens is not a string"
                ))),
                None => Err(malformed(format!(
                    "{key} = {id} is outside the {} tokens",
                    tokens.len()
                ))),
            }
        };
        let bos = token("tokenizer.ggml.bos_token_id")?;
        let eos = token("tokenizer.ggml.eos_token_id")?;
        Self::new(source, bos, eos).map(Some)
    }

    /// A `tokenizer_config.json` value: `chat_template` is a string, or a list of `{name, template}` of which the one
    /// named "default" is used (as transformers does when no name is asked for); `bos_token` / `eos_token` are strings
    /// or `{"content": …}` objects. `None` if there is no template.
    pub fn from_tokenizer_config(cfg: &serde_json::Value) -> Result<Option<Self>> {
        let bad = |detail: String| Error::Malformed {
            format: Format::Json,
            detail,
        };
        let source = match cfg.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => {
                let mut default = None;
                for entry in list {
                    let name = entry.get("name").and_then(serde_json::Value::as_str);
                    let template = entry.get("template").and_then(serde_json::Value::as_str);
                    match (name, template) {
                        (Some("default"), Some(t)) => default = Some(t.to_string()),
                        (Some(_), Some(_)) => {}
                        _ => {
                            return Err(bad(
                                "chat_template entries must be {\"name\": …, \"template\": …}"
                                    .into(),
                            ))
                        }
                    }
                }
                default.ok_or_else(|| {
                    Error::Template(
                        "the model has several chat templates and none is named \"default\"".into(),
                    )
                })?
            }
            Some(_) => {
                return Err(bad(
                    "chat_template must be a string or a list of named templates".into(),
                ))
            }
        };
        let token = |key: &str| -> Result<String> {
            match cfg.get(key) {
                None | Some(serde_json::Value::Null) => Ok(String::new()),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(v) => match v.get("content").and_then(serde_json::Value::as_str) {
                    Some(s) => Ok(s.to_string()),
                    None => Err(bad(format!(
                        "{key} must be a string or an object with \"content\""
                    ))),
                },
            }
        };
        let bos = token("bos_token")?;
        let eos = token("eos_token")?;
        Self::new(source, bos, eos).map(Some)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, serde_json::Value::Null)
    }

    /// Renders with extra template variables (an object, or null for none), e.g. `date_string`, `tools`,
    /// `enable_thinking`. Like transformers: `tools` and `documents` are none unless given, and `bos_token` /
    /// `eos_token` may be overridden, but `messages` and `add_generation_prompt` always come from the arguments.
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: serde_json::Value,
    ) -> Result<String> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert("bos_token".into(), Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token".into(), Value::from(self.eos_token.as_str()));
        match extra {
            serde_json::Value::Null => {}
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    ctx.insert(k, Value::from_serialize(&v));
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "extra chat template variables must be a JSON object, not {other}"
                )))
            }
        }
        ctx.insert("messages".into(), Value::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );

        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        template
            .render(Value::from_iter(ctx))
            .map_err(template_error)
    }

    /// Magpie pre-query template: the rendered conversation up to where the user's text begins, after an optional
    /// system prompt — e.g. `<|im_start|>user\n` for ChatML.
    pub fn pre_query(&self, system: Option<&str>) -> Result<String> {
        let messages: Vec<Message> = system.map(Message::system).into_iter().collect();
        self.next_query(&messages)
    }

    /// The rendered conversation `history` followed by the start of the next user turn, up to where its text would
    /// begin: what a multi-turn Magpie continues from.
    pub fn next_query(&self, history: &[Message]) -> Result<String> {
        let mut messages = history.to_vec();
        messages.push(Message::user(SENTINEL));
        let rendered = self.render(&messages, false)?;
        match rendered.find(SENTINEL) {
            Some(at) => Ok(rendered[..at].to_string()),
            None => Err(Error::Template(
                "the chat template does not print the user's message, so it has no pre-query template".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_scoped_blocks() {
        assert_eq!(
            rewrite_generation_tags(
                "a{%- generation +%}b{% endgeneration -%}c{% if x %}{% endif %}"
            ),
            "a{%- with +%}b{% endwith -%}c{% if x %}{% endif %}"
        );
        assert_eq!(rewrite_generation_tags("{{ '{%' }}"), "{{ '{%' }}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = ChatTemplate::new("ok\n{% if x %}\n{{ y }", "", "").unwrap_err();
        match err {
            Error::Template(msg) => assert!(msg.contains("line 3"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn raise_exception_carries_the_templates_message() {
        let t = ChatTemplate::new(
            "{% macro m() %}{{ raise_exception('no ' + 'way') }}{% endmacro %}{{ m() }}",
            "",
            "",
        )
        .unwrap();
        match t.render(&[], false) {
            Err(Error::Template(msg)) => assert_eq!(msg, "no way"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(matches!(t.render(&[], false), Err(Error::Template(_))));
    }

    #[test]
    fn extra_must_be_an_object() {
        let t = ChatTemplate::builtin(Builtin::ChatMl, "", "");
        assert!(matches!(
            t.render_with(&[], false, serde_json::json!([1])),
            Err(Error::InvalidArgument(_))
        ));
    }
}
