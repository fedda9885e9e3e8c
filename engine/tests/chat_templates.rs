//! Chat templates rendered by the engine must equal, byte for byte, what Hugging Face transformers renders for the
//! same template and conversation (tests/fixtures/chat/refs.json, written by gen_chat_refs.py).
// Native only: it reads files from disk, and wasm32 has no file system (the browser tests are tests/web_goldens.rs).
#![cfg(not(target_arch = "wasm32"))]

use engine::chat::{strftime, Builtin, ChatTemplate, Message};
use engine::format::{MetaValue, Metadata};
use engine::Error;
use serde_json::{json, Value as Json};
mod common;

use std::collections::HashMap;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/chat");

/// The date the reference renders pinned `strftime_now` to, as Llama 3.2 prints it.
const REFERENCE_DATE: &str = "05 Sep 2024";

fn refs() -> Json {
    let path = format!("{FIXTURES}/refs.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).expect("refs.json is valid JSON")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    strftime("%d %b %Y", now)
}

/// Builds each reference template through the loader a model would use: built-ins directly, the shared
/// tokenizer_config.json templates through `from_tokenizer_config`, the GGUF one through `from_gguf`.
fn load_template(name: &str, bos: &str, eos: &str) -> ChatTemplate {
    let (kind, file) = name.split_once(':').expect("template names are kind:name");
    match kind {
        "builtin" => {
            let b = match file {
                "chatml" => Builtin::ChatMl,
                "llama3" => Builtin::Llama3,
                "gemma" => Builtin::Gemma,
                other => panic!("unknown built-in {other}"),
            };
            ChatTemplate::builtin(b, bos, eos)
        }
        "shared" => {
            // bos in the {"content": …} form of AddedToken, eos as a plain string: both forms occur in the wild.
            let cfg = json!({
                "chat_template": read(&common::reference("chat-templates").join(file).display().to_string()),
                "bos_token": {"__type": "AddedToken", "content": bos, "lstrip": false},
                "eos_token": eos,
            });
            ChatTemplate::from_tokenizer_config(&cfg)
                .unwrap()
                .expect("config has a template")
        }
        "fixture" if file.starts_with("gguf-") => {
            let mut tokens: Vec<MetaValue> = (0..8)
                .map(|i| MetaValue::String(format!("tok{i}")))
                .collect();
            tokens[1] = MetaValue::String(bos.into());
            tokens[2] = MetaValue::String(eos.into());
            let mut meta = Metadata::new();
            meta.insert(
                "tokenizer.chat_template".into(),
                MetaValue::String(read(&format!("{FIXTURES}/{file}"))),
            );
            meta.insert("tokenizer.ggml.tokens".into(), MetaValue::Array(tokens));
            meta.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1));
            meta.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2));
            ChatTemplate::from_gguf(&meta)
                .unwrap()
                .expect("metadata has a template")
        }
        "fixture" => ChatTemplate::new(read(&format!("{FIXTURES}/{file}")), bos, eos).unwrap(),
        other => panic!("unknown template kind {other}"),
    }
}

fn templates(refs: &Json) -> HashMap<String, ChatTemplate> {
    refs["tokens"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| {
            let template =
                load_template(name, t["bos"].as_str().unwrap(), t["eos"].as_str().unwrap());
            (name.clone(), template)
        })
        .collect()
}

/// Where two renders first differ, with some context, for the failure message.
fn describe_difference(got: &str, want: &str) -> String {
    let got_chars: Vec<char> = got.chars().collect();
    let want_chars: Vec<char> = want.chars().collect();
    let at = got_chars
        .iter()
        .zip(&want_chars)
        .position(|(a, b)| a != b)
        .unwrap_or(got_chars.len().min(want_chars.len()));
    let window = |chars: &[char]| -> String {
        let start = at.saturating_sub(40);
        let end = (at + 40).min(chars.len());
        chars[start..end].iter().collect()
    };
    format!(
        "first difference at char {at} (lengths {} vs {}):\n  got:  {:?}\n  want: {:?}",
        got_chars.len(),
        want_chars.len(),
        window(&got_chars),
        window(&want_chars)
    )
}

/// Compares one result with a reference entry ({"output": …} or {"error": …, "error_type": …}); None if equal.
fn check(got: engine::Result<String>, expected: &Json, today: &str) -> Option<String> {
    match (got, expected.get("output").and_then(Json::as_str)) {
        (Ok(got), Some(want)) => {
            let want = want.replace(REFERENCE_DATE, today);
            (got != want).then(|| describe_difference(&got, &want))
        }
        (Ok(got), None) => Some(format!(
            "rendered {got:?}, but transformers raised {}",
            expected["error"]
        )),
        (Err(Error::Template(msg)), None) => {
            // A raise_exception() message must come through unchanged; other Python errors only need to be errors.
            let want = expected["error"].as_str().unwrap_or_default();
            (expected["error_type"] == "TemplateError" && msg != want)
                .then(|| format!("error {msg:?}, expected {want:?}"))
        }
        (Err(e), _) => Some(format!("failed with {e:?}, expected {expected}")),
    }
}

#[test]
fn renders_like_transformers() {
    let refs = refs();
    let templates = templates(&refs);
    let today = today();
    let conversations: HashMap<String, Vec<Message>> =
        serde_json::from_value(refs["conversations"].clone()).expect("conversations are messages");
    let cases = refs["cases"].as_array().unwrap();
    assert!(
        cases.len() > 300,
        "refs.json has only {} cases",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in cases {
        let template = &templates[case["template"].as_str().unwrap()];
        let messages = &conversations[case["conversation"].as_str().unwrap()];
        let mut extra = refs["variants"][case["variant"].as_str().unwrap()].clone();
        // A null date_string stands for "not given": the template then asks strftime_now.
        extra.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        if let Some(problem) = check(template.render_with(messages, agp, extra), case, &today) {
            failures.push(format!(
                "{} / {} / {} / add_generation_prompt={agp}: {problem}",
                case["template"], case["variant"], case["conversation"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} renders differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn pre_query_matches_transformers() {
    let refs = refs();
    let templates = templates(&refs);
    let today = today();
    let mut failures = Vec::new();
    for case in refs["pre_query"].as_array().unwrap() {
        let system = case["system"].as_str();
        let got = templates[case["template"].as_str().unwrap()].pre_query(system);
        if let Some(problem) = check(got, case, &today) {
            failures.push(format!(
                "{} / system {:?}: {problem}",
                case["template"], system
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn builtin_pre_queries_are_the_magpie_ones() {
    // The strings from MODELS.md "Magpie pre-query templates".
    let chatml = ChatTemplate::builtin(Builtin::ChatMl, "<|im_start|>", "<|im_end|>");
    assert_eq!(chatml.pre_query(None).unwrap(), "<|im_start|>user\n");
    assert_eq!(
        chatml.pre_query(Some("Be kind.")).unwrap(),
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n"
    );

    let llama3 = ChatTemplate::builtin(Builtin::Llama3, "<|begin_of_text|>", "<|eot_id|>");
    assert_eq!(
        llama3.pre_query(None).unwrap(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    );
    assert_eq!(
        llama3.pre_query(Some("Be kind.")).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n"
    );

    let gemma = ChatTemplate::builtin(Builtin::Gemma, "<bos>", "<eos>");
    assert_eq!(gemma.pre_query(None).unwrap(), "<bos><start_of_turn>user\n");
    // Gemma has no system role: the system prompt opens the first user turn.
    assert_eq!(
        gemma.pre_query(Some("Be kind.")).unwrap(),
        "<bos><start_of_turn>user\nBe kind.\n\n"
    );
}

#[test]
fn pre_query_needs_the_user_message_in_the_output() {
    let t = ChatTemplate::new(
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{% endfor %}",
        "<s>",
        "</s>",
    )
    .unwrap();
    assert!(matches!(t.pre_query(None), Err(Error::Template(_))));
}

#[test]
fn strftime_matches_python() {
    let refs = refs();
    for case in refs["strftime"].as_array().unwrap() {
        let (format, unix) = (
            case["format"].as_str().unwrap(),
            case["unix"].as_i64().unwrap(),
        );
        assert_eq!(
            strftime(format, unix),
            case["output"].as_str().unwrap(),
            "strftime({format:?}, {unix})"
        );
    }
}

#[test]
fn tokenizer_config_forms() {
    let none = ChatTemplate::from_tokenizer_config(&json!({"bos_token": "<s>"})).unwrap();
    assert!(none.is_none());

    let listed = json!({
        "chat_template": [
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"},
        ],
        "bos_token": {"content": "<s>"},
        "eos_token": null,
    });
    let t = ChatTemplate::from_tokenizer_config(&listed)
        .unwrap()
        .unwrap();
    assert_eq!(t.render(&[Message::user("hi")], false).unwrap(), "<s>hi");

    let no_default = json!({"chat_template": [{"name": "tool_use", "template": "TOOLS"}]});
    assert!(matches!(
        ChatTemplate::from_tokenizer_config(&no_default),
        Err(Error::Template(_))
    ));
    assert!(ChatTemplate::from_tokenizer_config(&json!({"chat_template": 5})).is_err());
    assert!(
        ChatTemplate::from_tokenizer_config(&json!({"chat_template": "x", "bos_token": 3}))
            .is_err()
    );
    assert!(matches!(
        ChatTemplate::from_tokenizer_config(&json!({"chat_template": "{% for %}"})),
        Err(Error::Template(_))
    ));
}

#[test]
fn gguf_metadata_forms() {
    let mut meta = Metadata::new();
    assert!(ChatTemplate::from_gguf(&meta).unwrap().is_none());

    meta.insert(
        "tokenizer.chat_template".into(),
        MetaValue::String("{{ bos_token }}|{{ eos_token }}".into()),
    );
    // No token ids: the strings are empty.
    assert_eq!(
        ChatTemplate::from_gguf(&meta)
            .unwrap()
            .unwrap()
            .render(&[], false)
            .unwrap(),
        "|"
    );

    meta.insert(
        "tokenizer.ggml.tokens".into(),
        MetaValue::Array(vec![MetaValue::String("<eos>".into())]),
    );
    meta.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(0));
    assert_eq!(
        ChatTemplate::from_gguf(&meta)
            .unwrap()
            .unwrap()
            .render(&[], false)
            .unwrap(),
        "|<eos>"
    );

    meta.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(7));
    assert!(matches!(
        ChatTemplate::from_gguf(&meta),
        Err(Error::Malformed { .. })
    ));

    meta.insert("tokenizer.chat_template".into(), MetaValue::U32(1));
    assert!(matches!(
        ChatTemplate::from_gguf(&meta),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn long_conversations_fit_the_render_budget() {
    // Gemma 4's template is quadratic in the number of messages; the instruction budget must still allow long chats.
    let messages: Vec<Message> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                Message::user(format!("question {i}"))
            } else {
                Message::assistant(format!("answer {i}"))
            }
        })
        .collect();
    let refs = refs();
    for (name, template) in templates(&refs) {
        if name == "fixture:features.jinja" {
            continue; // not a chat format: it stops after three messages on purpose
        }
        let rendered = template
            .render(&messages, true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            rendered.contains("answer 999") && rendered.contains("question 998"),
            "{name}"
        );
    }
}
