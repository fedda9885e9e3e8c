//! The layout of links and files, checked against JSON written out by hand.

use super::{link, link_with};
use crate::*;
use engine::sampling::SamplingParams;
use serde_json::json;

fn sample_state() -> ShareState {
    ShareState {
        view: View::Chat,
        model: Some(ModelRef {
            source: ModelSource::Url("https://huggingface.co/a/b/resolve/main/m.gguf".into()),
            name: Some("M".into()),
            size_bytes: Some(1234),
        }),
        adapters: vec![AdapterRef {
            url: "https://example.com/a.safetensors".into(),
            name: "pirate".into(),
            enabled: false,
            scale: 0.5,
            size_bytes: None,
        }],
        system_prompt: "Be brief.".into(),
        messages: vec![
            Message { role: Role::User, text: "Hi".into() },
            Message { role: Role::Assistant, text: "Hello!".into() },
        ],
        sampling: SamplingParams { temperature: 0.25, top_k: 40, seed: 7, ..SamplingParams::chat() },
        max_tokens: 100,
        backend: Some(engine::protocol::BackendChoice::Cpu),
        ..ShareState::default()
    }
}

fn sample_json() -> serde_json::Value {
    json!({
        "version": 1,
        "view": "chat",
        "model": {
            "source": { "url": "https://huggingface.co/a/b/resolve/main/m.gguf" },
            "name": "M",
            "size_bytes": 1234
        },
        "adapters": [{ "url": "https://example.com/a.safetensors", "name": "pirate", "enabled": false, "scale": 0.5 }],
        "system_prompt": "Be brief.",
        "messages": [{ "role": "user", "text": "Hi" }, { "role": "assistant", "text": "Hello!" }],
        "sampling": {
            "temperature": 0.25, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
            "repeat_penalty": 1.1, "repeat_last_n": 64, "seed": 7
        },
        "max_tokens": 100,
        "backend": "cpu"
    })
}

#[test]
fn encode_writes_tagged_base64url_raw_deflate_json() {
    let link = encode(&sample_state()).unwrap();
    let payload = link.strip_prefix("v1.").expect("version tag");
    assert!(payload.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{payload}");
    use base64::Engine;
    let packed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    let json = miniz_oxide::inflate::decompress_to_vec(&packed).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(value, sample_json());
}

#[test]
fn a_hand_packed_link_decodes() {
    assert_eq!(decode(&link(&sample_json())).unwrap(), sample_state());
}

#[test]
fn fragment_carries_the_key() {
    let f = fragment(&sample_state()).unwrap();
    assert!(f.starts_with("share=v1."), "{f}");
    assert_eq!(parse_fragment(&f).unwrap(), sample_state());
    assert_eq!(parse_fragment(&format!("#{f}")).unwrap(), sample_state());
}

#[test]
fn missing_fields_take_defaults() {
    let s = decode(&link(&json!({ "version": 1 }))).unwrap();
    assert_eq!(s.view, View::Chat);
    assert_eq!(s.model, None);
    assert!(s.adapters.is_empty() && s.messages.is_empty() && s.system_prompt.is_empty());
    assert_eq!(s.sampling, SamplingParams::chat());
    assert_eq!(s.max_tokens, 256);
    let a = decode(&link_with(json!({ "adapters": [{ "url": "https://x.example/a" }] }))).unwrap();
    assert_eq!((a.adapters[0].enabled, a.adapters[0].scale, a.adapters[0].name.as_str()), (true, 1.0, ""));
}

#[test]
fn unknown_fields_are_ignored() {
    let mut json = sample_json();
    json["from_the_future"] = json!({ "deep": [1, 2, 3] });
    json["model"]["checksum"] = json!("abc");
    json["messages"][0]["timestamp"] = json!(12);
    json["sampling"]["typical_p"] = json!(0.5);
    assert_eq!(decode(&link(&json)).unwrap(), sample_state());
}

#[test]
fn file_json_is_the_same_json() {
    let text = to_file_json(&sample_state()).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value, sample_json());
    assert_eq!(from_file_json(text.as_bytes()).unwrap(), sample_state());
}

#[test]
fn link_limit_is_about_the_whole_url() {
    let url = format!("https://aviary.example/#{}", fragment(&sample_state()).unwrap());
    assert!(fits_in_link(&url));
    assert!(!fits_in_link(&"a".repeat(LINK_LIMIT + 1)));
}

#[test]
fn markup_comes_back_as_the_same_text() {
    let xss = "<img src=x onerror=alert(1)><script>alert(2)</script>&amp;";
    let mut s = sample_state();
    s.system_prompt = xss.into();
    s.messages[0].text = xss.into();
    s.adapters[0].name = xss.into();
    assert_eq!(decode(&encode(&s).unwrap()).unwrap().messages[0].text, xss);
    assert_eq!(decode(&encode(&s).unwrap()).unwrap(), s);
}

#[test]
fn the_cap_is_on_the_payload_not_the_fragment() {
    // A payload exactly at the cap that `encode` allows: the `#share=` around it must not push it over.
    let payload = format!("v1.{}", "A".repeat(MAX_LINK_CHARS - 3));
    let got = parse_fragment(&format!("#share={payload}"));
    assert!(!matches!(got, Err(Error::LinkTooLong { .. })), "{got:?}");
    assert!(matches!(parse_fragment(&format!("#share={payload}A")), Err(Error::LinkTooLong { .. })));
}
