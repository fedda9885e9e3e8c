//! Tokenizers against llama.cpp: the vocabulary test files of llama.cpp's test-tokenizer-0 (ids llama.cpp produces for
//! each string), special-token ids taken from llama.cpp (llama-cpp-python 0.3.36, `Llama(vocab_only=True).tokenize(..,
//! special=True)`), decoding round trips and streaming detokenisation.
// Native only: it reads files from disk, and wasm32 has no file system (the browser tests are tests/web_goldens.rs).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use engine::format::gguf::read_gguf;
use engine::source::FileSource;
use engine::tokenizer::{Detokenizer, Tokenizer};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

fn vocab_path(name: &str) -> PathBuf {
    common::reference("vocab").join(name)
}

fn load(path: &Path) -> Tokenizer {
    let src = FileSource::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let file = futures::executor::block_on(read_gguf(&src))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Tokenizer::from_gguf(&file.metadata)
        .unwrap_or_else(|e| panic!("tokenizer of {}: {e}", path.display()))
}

/// Each vocabulary is loaded once for all tests.
fn load_vocab(name: &str) -> &'static Tokenizer {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static Tokenizer>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache.entry(name.to_string()).or_insert_with(|| {
        Box::leak(Box::new(load(&vocab_path(&format!(
            "ggml-vocab-{name}.gguf"
        )))))
    })
}

/// The (text, ids) pairs of a vocabulary test, split as test-tokenizer-0 does: texts are separated by
/// "\n__ggml_vocab_test__\n"; the .out file has one line of space-separated ids per text.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let base = vocab_path(&format!("ggml-vocab-{name}.gguf"));
    let inp =
        std::fs::read_to_string(base.with_extension("gguf.inp")).expect("reading the .inp file");
    let out =
        std::fs::read_to_string(base.with_extension("gguf.out")).expect("reading the .out file");
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(SEP) {
            Some(i) => {
                texts.push(rest[..i].to_string());
                rest = &rest[i + SEP.len()..];
            }
            None => {
                texts.push(rest.to_string());
                rest = "";
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("a token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: .inp and .out disagree on the number of tests"
    );
    assert!(texts.len() > 30, "{name}: only {} tests found", texts.len());
    texts.into_iter().zip(ids).collect()
}

fn check_llama_cpp_ids(name: &str) {
    let tok = load_vocab(name);
    let all = cases(name);
    let failures: Vec<_> = all
        .iter()
        .filter_map(|(text, want)| {
            let got = tok
                .encode(text, false)
                .unwrap_or_else(|e| panic!("{name}: encoding {text:?}: {e}"));
            (&got != want).then_some((text, want, got))
        })
        .collect();
    if let Some((text, want, got)) = failures.first() {
        panic!(
            "{name}: {} of {} strings differ from llama.cpp; first: {text:?}\n  llama.cpp: {want:?}\n  ours:      {got:?}",
            failures.len(),
            all.len()
        );
    }
}

#[test]
fn llama_bpe_matches_llama_cpp() {
    check_llama_cpp_ids("llama-bpe");
}

#[test]
fn llama_spm_matches_llama_cpp() {
    check_llama_cpp_ids("llama-spm");
}

#[test]
fn phi_3_matches_llama_cpp() {
    check_llama_cpp_ids("phi-3");
}

#[test]
fn gpt_2_matches_llama_cpp() {
    check_llama_cpp_ids("gpt-2");
}

const VOCABS: [&str; 4] = ["llama-bpe", "llama-spm", "phi-3", "gpt-2"];

/// Texts whose characters span several tokens: byte-fallback pieces (SentencePiece) and byte-level pieces (BPE).
const MULTIBYTE: [&str; 5] = [
    "🦙 llamas 🦙🦙",
    "我想在apple工作1314151天～",
    "😶‍🌫️ (multiple emojis concatenated) ✅",
    "កាន់តែពិសេសអាចខលចេញ",
    " нещо на Български\n\t🚀",
];

#[test]
fn decode_round_trips() {
    for name in VOCABS {
        let tok = load_vocab(name);
        let texts = cases(name)
            .into_iter()
            .map(|(t, _)| t)
            .chain(MULTIBYTE.iter().map(|s| s.to_string()));
        for text in texts {
            let ids = tok.encode(&text, false).unwrap();
            assert_eq!(
                tok.decode(&ids, false).unwrap(),
                text,
                "{name}: decode(encode(text)) for {ids:?}"
            );
            let with_bos = tok.encode(&text, true).unwrap();
            assert_eq!(
                tok.decode(&with_bos, true).unwrap(),
                text,
                "{name}: BOS is skipped as special"
            );
        }
    }
}

#[test]
fn detokenizer_streams_whole_characters() {
    for name in VOCABS {
        let tok = load_vocab(name);
        let mut held_back = 0;
        let texts = MULTIBYTE
            .iter()
            .map(|s| s.to_string())
            .chain(cases(name).into_iter().map(|(t, _)| t));
        for text in texts {
            let ids = tok.encode(&text, false).unwrap();
            let mut stream = Detokenizer::new(tok, false);
            let mut streamed = String::new();
            for &id in &ids {
                let chunk = stream.push(id).unwrap();
                assert!(
                    !chunk.contains('\u{FFFD}'),
                    "{name}: chunk {chunk:?} of {text:?} has U+FFFD"
                );
                if chunk.is_empty() {
                    held_back += 1;
                }
                streamed.push_str(&chunk);
            }
            streamed.push_str(&stream.finish().unwrap());
            assert_eq!(
                streamed,
                tok.decode(&ids, false).unwrap(),
                "{name}: streamed text of {ids:?}"
            );
            assert_eq!(streamed, text, "{name}");
        }
        assert!(
            held_back > 0,
            "{name}: no token ever held back a partial character"
        );
    }
}

#[test]
fn detokenizer_drops_bytes_that_never_form_a_character() {
    let tok = load_vocab("llama-spm");
    let byte = |b: u8| {
        tok.token_to_id(&format!("<0x{b:02X}>"))
            .expect("a byte piece")
    };
    let hi = tok.encode("hi", false).unwrap();
    let mut stream = Detokenizer::continuing(tok, false);
    let mut out = String::new();
    // E2 82 AC is "€"; a lone E2 followed by text, and a stray continuation byte, can never complete.
    for id in [byte(0xE2)].into_iter().chain(hi.iter().copied()).chain([
        byte(0x80),
        byte(0xE2),
        byte(0x82),
        byte(0xAC),
    ]) {
        let chunk = stream.push(id).unwrap();
        assert!(!chunk.contains('\u{FFFD}'));
        out.push_str(&chunk);
    }
    out.push_str(&stream.push(byte(0xE2)).unwrap());
    out.push_str(&stream.finish().unwrap());
    assert_eq!(
        out, " hi€",
        "continuing() keeps the leading space of \"▁hi\""
    );
    assert!(
        tok.decode(&[byte(0xE2)], false)
            .unwrap()
            .contains('\u{FFFD}'),
        "decode shows what it cannot decode"
    );
}

#[test]
fn special_tokens_in_text_become_ids() {
    let cases: [(&str, &str, &[u32]); 6] = [
        (
            "llama-bpe",
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello world<|eot_id|>",
            &[128000, 128006, 882, 128007, 271, 9906, 1917, 128009],
        ),
        // A SentencePiece text after a special token gets the "▁" prefix again.
        (
            "llama-spm",
            "<s>Hello</s> world",
            &[1, 15043, 2, 29871, 3186],
        ),
        // Phi-3's special tokens swallow the whitespace after them (except <s>, <unk>, <|endoftext|>).
        (
            "phi-3",
            "<|user|>\nHello<|end|>\n<|assistant|>\n",
            &[32010, 15043, 32007, 32001],
        ),
        ("phi-3", "Hi</s> there <unk>", &[6324, 2, 727, 29871, 0]),
        ("gpt-2", "Hello<|endoftext|> world", &[15496, 50256, 995]),
        ("llama-bpe", "", &[]),
    ];
    for (name, text, want) in cases {
        let tok = load_vocab(name);
        assert_eq!(tok.encode(text, false).unwrap(), want, "{name}: {text:?}");
    }
}

#[test]
fn special_ids() {
    let bpe = load_vocab("llama-bpe");
    assert_eq!(bpe.vocab_size(), 128256);
    assert_eq!(bpe.bos_id(), Some(128000));
    assert!(
        bpe.add_bos_by_default(),
        "llama.cpp adds BOS for the llama-bpe pre-tokenizer"
    );
    assert_eq!(bpe.eos_ids(), [128001, 128009]);
    assert_eq!(bpe.encode("Hello", true).unwrap(), [128000, 9906]);
    assert!(bpe.is_special(128009) && !bpe.is_special(9906));
    assert_eq!(bpe.token_to_id("<|eot_id|>"), Some(128009));
    assert_eq!(bpe.id_to_token(9906).as_deref(), Some("Hello"));
    assert_eq!(
        bpe.decode(&[128006, 9906], false).unwrap(),
        "<|start_header_id|>Hello"
    );
    assert_eq!(bpe.decode(&[128006, 9906], true).unwrap(), "Hello");

    let spm = load_vocab("llama-spm");
    assert_eq!(spm.vocab_size(), 32000);
    assert_eq!((spm.bos_id(), spm.add_bos_by_default()), (Some(1), true));
    assert_eq!(spm.eos_ids(), [2]);

    let phi3 = load_vocab("phi-3");
    assert_eq!(
        phi3.eos_ids(),
        [32000, 32007],
        "eos <|endoftext|> and end of turn <|end|>"
    );

    let gpt2 = load_vocab("gpt-2");
    assert_eq!(
        (gpt2.bos_id(), gpt2.add_bos_by_default()),
        (Some(50256), false)
    );
    assert_eq!(gpt2.eos_ids(), [50256]);
    assert!(
        gpt2.decode(&[50257], false).is_err(),
        "ids past the vocabulary are an error"
    );
}

#[test]
fn smollm2_gguf_tokenizer() {
    let tok = load(&common::real_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(tok.vocab_size(), 49152);
    assert!(!tok.add_bos_by_default());
    let im_start = tok.token_to_id("<|im_start|>").expect("ChatML tokens");
    let im_end = tok.token_to_id("<|im_end|>").expect("ChatML tokens");
    assert!(tok.eos_ids().contains(&im_end));
    let ids = tok
        .encode("<|im_start|>user\nWhat is 1234 + 5?<|im_end|>\n", false)
        .unwrap();
    assert_eq!(ids[0], im_start);
    assert!(ids.contains(&im_end));
    // smollm pre-splits digits one by one.
    let digits = tok.encode("1234", false).unwrap();
    assert_eq!(digits.len(), 4, "{digits:?}");
    for text in MULTIBYTE
        .iter()
        .chain(&["Hello, world! It's a  test.\n\nNew paragraph."])
    {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), *text);
    }
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nWhat is 1234 + 5?\n");
}

#[test]
fn gemma3_gguf_tokenizer() {
    let tok = load(&common::real_model("gemma-3-270m-q4_k_m.gguf"));
    assert_eq!(tok.vocab_size(), 262144);
    assert_eq!((tok.bos_id(), tok.add_bos_by_default()), (Some(2), true));
    assert_eq!(tok.token_to_id("<start_of_turn>"), Some(105));
    assert_eq!(tok.token_to_id("<end_of_turn>"), Some(106));
    assert!(
        tok.eos_ids().contains(&1) && tok.eos_ids().contains(&106),
        "{:?}",
        tok.eos_ids()
    );
    let ids = tok
        .encode("<start_of_turn>user\nHi there<end_of_turn>\n", true)
        .unwrap();
    assert_eq!(&ids[..2], [2, 105]);
    assert!(ids.contains(&106));
    // Gemma has no space prefix: "user" right after <start_of_turn> is the piece "user", not "▁user".
    assert_eq!(tok.id_to_token(ids[2]).as_deref(), Some("user"));
    for text in MULTIBYTE.iter().chain(&[
        "Hello, world! It's a  test.\n\nNew paragraph.",
        " leading space",
    ]) {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), *text);
    }
}

fn tokenizer_json(name: &str) -> Tokenizer {
    let dir = common::fixture("tokenizer").join(name);
    let json = std::fs::read(dir.join("tokenizer.json")).expect("reading tokenizer.json");
    let config = common::read_json(&dir.join("tokenizer_config.json"));
    Tokenizer::from_json(&json, Some(&config)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// tests/fixtures/tokenizer: small tokenizer.json files and what Hugging Face `tokenizers` makes of them.
#[test]
fn tokenizer_json_matches_hf_tokenizers() {
    let refs = common::read_json(&common::fixture("tokenizer/refs.json"));
    for name in ["bpe", "spm"] {
        let tok = tokenizer_json(name);
        for case in refs[name].as_array().expect("a list of cases") {
            let text = case["text"].as_str().expect("text");
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(
                ids,
                common::as_u32s(&case["ids"]),
                "{name}: encoding {text:?}"
            );
            assert_eq!(
                tok.decode(&ids, false).unwrap(),
                case["decoded"].as_str().unwrap(),
                "{name}: {text:?}"
            );
            assert_eq!(
                tok.decode(&ids, true).unwrap(),
                case["decoded_skip_special"].as_str().unwrap(),
                "{name}: {text:?}"
            );
            let mut stream = Detokenizer::new(&tok, true);
            let mut streamed = String::new();
            for &id in &ids {
                let chunk = stream.push(id).unwrap();
                assert!(!chunk.contains('\u{FFFD}'), "{name}: {chunk:?}");
                streamed.push_str(&chunk);
            }
            streamed.push_str(&stream.finish().unwrap());
            assert_eq!(
                streamed,
                case["decoded_skip_special"].as_str().unwrap(),
                "{name}: streaming {text:?}"
            );
        }
    }
}

#[test]
fn tokenizer_json_special_ids() {
    // bpe: the config names bos/eos; add_bos comes from the post-processor template that starts with the bos token.
    let bpe = tokenizer_json("bpe");
    let bos = bpe.token_to_id("<|begin_of_text|>").unwrap();
    let eot = bpe.token_to_id("<|eot_id|>").unwrap();
    assert_eq!((bpe.bos_id(), bpe.add_bos_by_default()), (Some(bos), true));
    assert_eq!(
        bpe.eos_ids(),
        [eot, bpe.token_to_id("<|end_of_text|>").unwrap()]
    );
    assert_eq!(bpe.encode("Hello", true).unwrap()[0], bos);
    assert!(bpe.is_special(eot));

    // spm: transformers wrote no add_bos_token and a template without BOS; a config can turn it on.
    let dir = common::fixture("tokenizer/spm");
    let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let mut config = common::read_json(&dir.join("tokenizer_config.json"));
    let spm = Tokenizer::from_json(&json, Some(&config)).unwrap();
    assert_eq!(
        (spm.bos_id(), spm.add_bos_by_default(), spm.eos_ids()),
        (Some(1), false, &[2][..])
    );
    config["add_bos_token"] = serde_json::Value::Bool(true);
    assert!(Tokenizer::from_json(&json, Some(&config))
        .unwrap()
        .add_bos_by_default());
    let bare = Tokenizer::from_json(&json, None).unwrap();
    assert_eq!(
        (bare.bos_id(), bare.eos_ids()),
        (None, &[2][..]),
        "without a config, </s> is still an eos"
    );

    assert!(Tokenizer::from_json(b"{not json", None).is_err());
    assert!(Tokenizer::from_json(b"{}", None).is_err());
}
