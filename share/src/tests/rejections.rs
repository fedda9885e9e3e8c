//! One hostile or broken link per check, each refused with its own error.

use super::{link, link_with, pack};
use crate::*;
use serde_json::json;

fn out_of_range(patch: serde_json::Value) -> String {
    match decode(&link_with(patch.clone())) {
        Err(Error::OutOfRange { field, .. }) => field,
        other => panic!("{patch} gave {other:?}"),
    }
}

fn not_http(patch: serde_json::Value) {
    assert!(matches!(decode(&link_with(patch.clone())), Err(Error::NotHttpUrl { .. })), "{patch}");
}

#[test]
fn oversize_link_is_refused_before_decoding() {
    // Valid base64 of nothing in particular: only the length can refuse it.
    let long = format!("v1.{}", "A".repeat(MAX_LINK_CHARS));
    assert_eq!(decode(&long), Err(Error::LinkTooLong { len: long.len(), max: MAX_LINK_CHARS }));
    let frag = format!("share={long}");
    assert!(matches!(parse_fragment(&frag), Err(Error::LinkTooLong { .. })));
}

#[test]
fn oversize_file_is_refused_before_parsing() {
    let big = vec![b' '; MAX_FILE_BYTES + 1];
    assert!(matches!(from_file_json(&big), Err(Error::FileTooLarge { .. })));
}

#[test]
fn not_a_share_link() {
    for text in ["", "share=", "hello", "v.abc", "x1.abc", "v1abc", "v-1.abc", "v1x.abc", "v99999999999.abc"] {
        assert_eq!(decode(text), Err(Error::NotAShareLink), "{text:?}");
    }
    assert_eq!(parse_fragment("#other=v1.abc"), Err(Error::NotAShareLink));
}

#[test]
fn bad_base64() {
    for text in ["v1.abc$def", "v1.a+b/", "v1.abc=", "v1.A"] {
        assert!(matches!(decode(text), Err(Error::BadBase64(_))), "{text:?}");
    }
}

#[test]
fn bad_deflate() {
    use base64::Engine;
    // 0xFF starts a final block of type 3, which deflate reserves.
    let reserved = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xFF; 16]);
    assert_eq!(decode(&format!("v1.{reserved}")), Err(Error::BadDeflate));
    // A stream cut short.
    let full = miniz_oxide::deflate::compress_to_vec(br#"{"version":1,"system_prompt":"cut short"}"#, 6);
    let cut = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&full[..full.len() / 2]);
    assert_eq!(decode(&format!("v1.{cut}")), Err(Error::BadDeflate));
}

#[test]
fn deflate_bomb_stops_at_the_cap() {
    // Valid JSON whose string alone unpacks past the cap, packed into a link far under the length cap.
    let mut json = br#"{"version":1,"system_prompt":""#.to_vec();
    json.resize(json.len() + 8 * MAX_INFLATED_BYTES, b'a');
    json.extend_from_slice(br#""}"#);
    let bomb = format!("v1.{}", pack(&json));
    assert!(bomb.len() < MAX_LINK_CHARS / 2, "{} characters", bomb.len());
    assert_eq!(decode(&bomb), Err(Error::InflatedTooLarge { max: MAX_INFLATED_BYTES }));
}

#[test]
fn not_json_or_wrong_shape() {
    assert!(matches!(decode(&format!("v1.{}", pack(b"<html>"))), Err(Error::Malformed(_))));
    for bad in [
        json!([1, 2]),
        json!({ "view": "chat" }),
        json!({ "version": "1" }),
        json!({ "version": 1, "view": "settings" }),
        json!({ "version": 1, "messages": [{ "role": "system", "text": "x" }] }),
        json!({ "version": 1, "max_tokens": -5 }),
        json!({ "version": 1, "model": { "source": { "ftp": "x" } } }),
    ] {
        assert!(matches!(decode(&link(&bad)), Err(Error::Malformed(_))), "{bad}");
    }
    assert!(matches!(from_file_json(b"\xff\xfe{}"), Err(Error::Malformed(_))));
}

#[test]
fn unknown_version() {
    let newer = Err(Error::NewerVersion { found: 2, supported: VERSION });
    assert_eq!(decode(&link(&json!({ "version": 2, "an": "other shape" }))), newer);
    assert_eq!(decode(&format!("v2.{}", pack(b"{}"))), newer, "the tag alone names a newer link");
    assert_eq!(decode("v2.$$$"), newer, "named before the payload is read");
    assert_eq!(from_file_json(br#"{"version": 2}"#), newer);
    assert!(Error::NewerVersion { found: 2, supported: 1 }.to_string().contains("newer Aviary"));
    assert_eq!(decode(&link(&json!({ "version": 0 }))), Err(Error::UnknownVersion(0)));
    assert_eq!(decode(&format!("v0.{}", pack(b"{}"))), Err(Error::UnknownVersion(0)));
}

#[test]
fn out_of_range_values() {
    let sampling = |patch: serde_json::Value| {
        let mut s = serde_json::to_value(engine::sampling::SamplingParams::chat()).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            s[k] = v.clone();
        }
        json!({ "sampling": s })
    };
    assert_eq!(out_of_range(sampling(json!({ "temperature": -0.5 }))), "the sampling settings");
    assert_eq!(out_of_range(sampling(json!({ "top_p": 1.5 }))), "the sampling settings");
    assert_eq!(out_of_range(sampling(json!({ "min_p": -0.1 }))), "the sampling settings");
    assert_eq!(out_of_range(sampling(json!({ "repeat_penalty": 0.0 }))), "the sampling settings");
    assert_eq!(out_of_range(sampling(json!({ "top_k": 1u64 << 40 }))), "top-k");
    assert_eq!(out_of_range(json!({ "max_tokens": 0 })), "max tokens");
    assert_eq!(out_of_range(json!({ "max_tokens": 4_000_000_000u32 })), "max tokens");
    let adapter = |scale: f64| json!({ "adapters": [{ "url": "https://x.example/a", "scale": scale }] });
    assert_eq!(out_of_range(adapter(2.5)), "adapter 1's scale");
    assert_eq!(out_of_range(adapter(-0.1)), "adapter 1's scale");
    let model_size = |n: u64| json!({ "model": { "source": { "catalog": "m.gguf" }, "size_bytes": n } });
    assert_eq!(out_of_range(model_size(0)), "the model's size");
    assert_eq!(out_of_range(model_size(u64::MAX)), "the model's size");
    let mut magpie = serde_json::to_value(engine::magpie::MagpieSettings {
        pre_query_template: "<|im_start|>user\n".into(),
        ..Default::default()
    })
    .unwrap();
    magpie["turns"] = json!(0);
    assert_eq!(out_of_range(json!({ "magpie": magpie })), "the Magpie settings");
    let mut synth = serde_json::to_value(engine::synth::SynthSettings::default()).unwrap();
    synth["pairs"] = json!(0);
    assert_eq!(out_of_range(json!({ "synthesis": synth.clone() })), "synthesis's pairs per chunk");
    synth["pairs"] = json!(3);
    synth["chunk_tokens"] = json!(4);
    assert_eq!(out_of_range(json!({ "synthesis": synth })), "synthesis's chunk size");
}

#[test]
fn script_and_local_urls_are_refused() {
    for url in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " \tjavascript:alert(1)",
        "java\nscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "data:application/octet-stream;base64,R0dVRg==",
        "file:///etc/passwd",
        "blob:https://aviary.example/0b1e2c3d",
        "ftp://example.com/m.gguf",
        "//evil.example/m.gguf",
        "models/m.gguf",
        "https://",
    ] {
        not_http(json!({ "model": { "source": { "url": url } } }));
        not_http(json!({ "adapters": [{ "url": url }] }));
    }
}

#[test]
fn catalog_ids_stay_inside_the_app() {
    let hostile = ["", "/etc/passwd", "//evil.example/m.gguf", "../m.gguf", "models/../../m", "javascript:x", "a b"];
    for id in hostile {
        let got = decode(&link_with(json!({ "model": { "source": { "catalog": id } } })));
        assert!(matches!(got, Err(Error::BadCatalogId { .. })), "{id:?}: {got:?}");
    }
    let served = json!({ "model": { "source": { "catalog": "models/gemma-3-270m-q4_k_m.gguf" } } });
    assert!(decode(&link_with(served)).is_ok());
}

#[test]
fn too_many_messages() {
    let messages: Vec<_> = (0..=MAX_MESSAGES).map(|_| json!({ "role": "user", "text": "hi" })).collect();
    let got = decode(&link_with(json!({ "messages": messages })));
    assert_eq!(got, Err(Error::TooManyMessages { count: MAX_MESSAGES + 1, max: MAX_MESSAGES }));
}

#[test]
fn too_many_adapters() {
    let adapters: Vec<_> = (0..=MAX_ADAPTERS).map(|_| json!({ "url": "https://x.example/a" })).collect();
    let got = decode(&link_with(json!({ "adapters": adapters })));
    assert_eq!(got, Err(Error::TooManyAdapters { count: MAX_ADAPTERS + 1, max: MAX_ADAPTERS }));
}

#[test]
fn text_over_its_cap() {
    let long = "é".repeat(MAX_PROMPT_BYTES / 2 + 1);
    let got = decode(&link_with(json!({ "system_prompt": long })));
    assert!(matches!(got, Err(Error::TextTooLong { ref field, .. }) if field == "the system prompt"), "{got:?}");
    let name = "n".repeat(MAX_NAME_BYTES + 1);
    let got = decode(&link_with(json!({ "model": { "source": { "catalog": "m" }, "name": name } })));
    assert!(matches!(got, Err(Error::TextTooLong { .. })), "{got:?}");
    let url = format!("https://x.example/{}", "a".repeat(MAX_URL_BYTES));
    let got = decode(&link_with(json!({ "adapters": [{ "url": url }] })));
    assert!(matches!(got, Err(Error::TextTooLong { .. })), "{got:?}");
}

#[test]
fn encode_refuses_what_decode_would() {
    let mut s = ShareState::default();
    s.adapters.push(AdapterRef {
        url: "javascript:alert(1)".into(),
        name: String::new(),
        enabled: true,
        scale: 1.0,
        size_bytes: None,
    });
    assert!(matches!(encode(&s), Err(Error::NotHttpUrl { .. })));
    assert!(matches!(to_file_json(&s), Err(Error::NotHttpUrl { .. })));
    s.adapters[0].url = "https://x.example/a".into();
    s.adapters[0].scale = f32::NAN;
    assert!(matches!(encode(&s), Err(Error::OutOfRange { .. })));
    s.adapters.clear();
    s.sampling.temperature = f32::INFINITY;
    assert!(matches!(encode(&s), Err(Error::OutOfRange { .. })));
}

#[test]
fn incompressible_state_too_large_for_a_link() {
    // Hex of a xorshift stream: text deflate cannot shrink much, so the link outgrows its cap long before the JSON
    // reaches the inflated one.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: String = (0..MAX_MESSAGE_BYTES / 2)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"0123456789abcdef"[(x & 15) as usize])
        })
        .collect();
    let mut s = ShareState::default();
    s.messages.push(Message { role: Role::User, text: noise });
    assert!(matches!(encode(&s), Err(Error::TooLongForLink { .. })));
    assert_eq!(from_file_json(to_file_json(&s).unwrap().as_bytes()).unwrap(), s, "a file holds it");
}
