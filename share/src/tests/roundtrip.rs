//! Any valid state survives a link and a file unchanged; no input makes the decoder panic.

use crate::*;
use engine::magpie::{MagpieSettings, StepSettings};
use engine::protocol::BackendChoice;
use engine::sampling::SamplingParams;
use engine::synth::SynthSettings;
use proptest::prelude::*;

const XSS: &str = "<img src=x onerror=alert(1)>";

/// Any Unicode (newlines, controls, astral planes), markup, and the empty string.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::string::string_regex(&format!("(?s).{{0,{max}}}")).unwrap(),
        1 => Just(XSS.to_string()),
        1 => Just(format!("\"}}]{XSS}\\u0000\0</script>")),
    ]
}

fn http_url() -> impl Strategy<Value = String> {
    prop_oneof![
        ("https?", "[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,4})?", "(/[A-Za-z0-9._~%-]{0,10}){0,3}")
            .prop_map(|(scheme, host, path)| format!("{scheme}://{host}.example{path}")),
        Just(format!("https://x.example/a?q={XSS}")),
        Just("HTTP://Example.COM:8080/m.gguf#frag".to_string()),
    ]
}

fn model() -> impl Strategy<Value = ModelRef> {
    let source = prop_oneof![
        "[a-z0-9_-][a-z0-9._-]{0,11}(/[a-z0-9_-][a-z0-9._-]{0,11}){0,2}".prop_map(ModelSource::Catalog),
        http_url().prop_map(ModelSource::Url),
    ];
    (source, proptest::option::of(text(20)), proptest::option::of(1..=MAX_SIZE_BYTES))
        .prop_map(|(source, name, size_bytes)| ModelRef { source, name, size_bytes })
}

fn adapter() -> impl Strategy<Value = AdapterRef> {
    (http_url(), text(20), any::<bool>(), 0.0f32..=2.0, proptest::option::of(1..=MAX_SIZE_BYTES))
        .prop_map(|(url, name, enabled, scale, size_bytes)| AdapterRef { url, name, enabled, scale, size_bytes })
}

fn message() -> impl Strategy<Value = Message> {
    (prop_oneof![Just(Role::User), Just(Role::Assistant)], text(60)).prop_map(|(role, text)| Message { role, text })
}

fn sampling() -> impl Strategy<Value = SamplingParams> {
    (0.0f32..5.0, 0usize..100_000, 0.0f32..=1.0, 0.0f32..=1.0, 0.001f32..10.0, 0usize..100_000, any::<u64>()).prop_map(
        |(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)| SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            seed,
        },
    )
}

fn step() -> impl Strategy<Value = StepSettings> {
    (0.0f32..5.0, 0.0f32..=1.0, 1usize..=MAX_TOKENS_CAP as usize)
        .prop_map(|(temperature, top_p, max_tokens)| StepSettings { temperature, top_p, max_tokens })
}

fn magpie() -> impl Strategy<Value = MagpieSettings> {
    let template = proptest::string::string_regex("(?s).{1,40}").unwrap();
    (
        any::<u64>(),
        1u32..=16,
        template,
        proptest::option::of(text(40)),
        step(),
        step(),
        any::<(bool, bool)>(),
        text(20),
    )
        .prop_map(|(seed, turns, pre_query_template, system_prompt, instruction, response, (stop, sanitize), model)| {
            MagpieSettings {
                seed,
                turns,
                pre_query_template,
                system_prompt,
                instruction,
                response,
                stop_at_newline: stop,
                sanitize,
                model,
            }
        })
}

fn synthesis() -> impl Strategy<Value = SynthSettings> {
    (16usize..100_000, 1usize..=32, 0.0f32..5.0, 0.0f32..=1.0, any::<u64>(), 1usize..=MAX_TOKENS_CAP as usize).prop_map(
        |(chunk_tokens, pairs, temperature, top_p, seed, max_tokens)| SynthSettings {
            chunk_tokens,
            pairs,
            temperature,
            top_p,
            seed,
            max_tokens,
        },
    )
}

fn state() -> impl Strategy<Value = ShareState> {
    let view = prop_oneof![Just(View::Chat), Just(View::Magpie), Just(View::Synthesis)];
    let backend = proptest::option::of(prop_oneof![
        Just(BackendChoice::Auto),
        Just(BackendChoice::Gpu),
        Just(BackendChoice::Cpu)
    ]);
    (
        view,
        proptest::option::of(model()),
        proptest::collection::vec(adapter(), 0..=3),
        text(80),
        proptest::collection::vec(message(), 0..12),
        sampling(),
        1..=MAX_TOKENS_CAP,
        backend,
        proptest::option::of(magpie()),
        proptest::option::of(synthesis()),
    )
        .prop_map(|(view, model, adapters, system_prompt, messages, sampling, max_tokens, backend, magpie, synthesis)| {
            ShareState {
                version: VERSION,
                view,
                model,
                adapters,
                system_prompt,
                messages,
                sampling,
                max_tokens,
                backend,
                magpie,
                synthesis,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn link_round_trip(s in state()) {
        let link = encode(&s).unwrap();
        prop_assert!(link.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{}", link);
        prop_assert_eq!(decode(&link).unwrap(), s.clone());
        prop_assert_eq!(parse_fragment(&format!("#{}", fragment(&s).unwrap())).unwrap(), s);
    }

    #[test]
    fn file_round_trip(s in state()) {
        prop_assert_eq!(from_file_json(to_file_json(&s).unwrap().as_bytes()).unwrap(), s);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
        let _ = parse_fragment(&text);
        let _ = decode(&text);
        let _ = from_file_json(text.as_bytes());
    }

    /// Flipped characters in a real link reach the inflater and the JSON parser, which random text rarely does.
    #[test]
    fn damaged_links_never_panic(s in state(), at in any::<prop::sample::Index>(), with in "[A-Za-z0-9_-]") {
        let mut link = encode(&s).unwrap().into_bytes();
        let i = 3 + at.index(link.len() - 3);
        link[i] = with.as_bytes()[0];
        let _ = decode(&String::from_utf8(link).unwrap());
    }
}
