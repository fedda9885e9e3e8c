//! `aviary magpie` with SmolLM2-135M-Instruct on the CPU backend: reproducible files, rows independent of the batch
//! size, well-formed rows, and shards that together make the unsharded run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cache_dir() -> PathBuf {
    std::env::var_os("AVIARY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aviary"))
}

fn model() -> PathBuf {
    let p = cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "{} is missing: run scripts/fetch-models.sh (make test does)", p.display());
    p
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aviary-magpie-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Short rows keep the test quick; the properties do not depend on length.
fn magpie(out: &Path, extra: &[&str]) -> String {
    let status = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["magpie", "--backend", "cpu", "--n", "6", "--seed", "7", "--ins-max-tokens", "40"])
        .args(["--max-tokens", "40", "--stop-at-newline", "--out"])
        .arg(out)
        .arg("--model")
        .arg(model())
        .args(extra)
        .status()
        .expect("running aviary");
    assert!(status.success(), "aviary magpie {extra:?} failed");
    std::fs::read_to_string(out).unwrap()
}

fn rows(jsonl: &str) -> Vec<serde_json::Value> {
    jsonl.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

const TEMPLATE_TOKENS: [&str; 4] = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_sep|>"];

#[test]
fn magpie_rows_are_reproducible_and_independent_of_batching_and_sharding() {
    let a = magpie(&scratch("a.jsonl"), &["--batch", "3"]);
    let b = magpie(&scratch("b.jsonl"), &["--batch", "3"]);
    assert_eq!(a, b, "the same seed and settings wrote different files");
    let one = magpie(&scratch("one.jsonl"), &["--batch", "1"]);
    assert_eq!(one, a, "--batch 1 wrote different rows than --batch 3");

    let all = rows(&a);
    assert_eq!(all.len(), 6);
    let mut ids = BTreeSet::new();
    for (i, row) in all.iter().enumerate() {
        let conv = row["conversations"].as_array().expect("conversations");
        assert_eq!(conv.len(), 2, "row {i}: {row}");
        assert_eq!(conv[0]["from"], "human");
        assert_eq!(conv[1]["from"], "gpt");
        for field in ["instruction", "response"] {
            let text = row[field].as_str().unwrap();
            assert!(!text.trim().is_empty(), "row {i}: empty {field}");
            for t in TEMPLATE_TOKENS {
                assert!(!text.contains(t), "row {i}: {field} holds {t}: {text:?}");
            }
        }
        assert_eq!(row["instruction"], conv[0]["value"]);
        assert_eq!(row["response"], conv[1]["value"]);
        let cfg = &row["gen_input_configs"];
        assert_eq!(cfg["seed"], 7);
        assert_eq!(cfg["sample_index"], i as u64);
        assert_eq!(cfg["temperature"], 1.0);
        assert!(cfg["pre_query_template"].as_str().unwrap().ends_with("<|im_start|>user\n"));
        assert!(ids.insert(row["id"].as_str().unwrap().to_string()), "row {i}: duplicate id");
    }
    let distinct: BTreeSet<&str> = all.iter().map(|r| r["instruction"].as_str().unwrap()).collect();
    assert!(distinct.len() > 1, "every sample wrote the same instruction: {distinct:?}");

    let s0 = magpie(&scratch("s0.jsonl"), &["--batch", "2", "--shard", "0/2"]);
    let s1 = magpie(&scratch("s1.jsonl"), &["--batch", "2", "--shard", "1/2"]);
    let sharded: BTreeSet<String> = s0.lines().chain(s1.lines()).map(String::from).collect();
    let whole: BTreeSet<String> = a.lines().map(String::from).collect();
    assert_eq!(sharded, whole, "shards 0/2 and 1/2 do not make the unsharded rows");
}

#[test]
fn show_template_prints_the_pre_query_template() {
    let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["magpie", "--backend", "cpu", "--show-template", "--model"])
        .arg(model())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    // What transformers renders for this GGUF's template (tests/fixtures/chat/gen_chat_refs.py): SmolLM2's default
    // system message, then the user header.
    let refs_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat/refs.json");
    let refs: serde_json::Value = serde_json::from_slice(&std::fs::read(refs_path).unwrap()).unwrap();
    let want = refs["pre_query"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["template"] == "fixture:gguf-SmolLM2-135M-Instruct.jinja" && c["system"].is_null())
        .expect("the SmolLM2 case in refs.json");
    assert_eq!(v["pre_query_template"], want["output"]);
}

#[test]
fn an_unwritable_output_fails_before_loading() {
    let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["magpie", "--n", "1", "--out", "/nonexistent-dir/x.jsonl", "--model", "/nonexistent.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write /nonexistent-dir/x.jsonl"), "{err}");
}

#[test]
fn bad_shards_are_refused_with_a_reason() {
    for shard in ["2/2", "x/2", "1"] {
        let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
            .args(["magpie", "--n", "1", "--out", "/tmp/unused.jsonl", "--model", "/nonexistent.gguf", "--shard", shard])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--shard"), "{shard}: {err}");
    }
}

#[test]
fn synth_writes_pairs_and_augmented_text() {
    let input = scratch("raw.txt");
    std::fs::write(
        &input,
        "The honey bee is a flying insect of the genus Apis. Honey bees build nests from wax and store honey.\n\n\
         A colony has one queen, thousands of female workers and, in summer, a few hundred male drones. Workers \
         forage for nectar and pollen and care for the brood.\n\n\
         Beekeeping is the keeping of bee colonies by people, in hives. Honey is harvested from capped comb.\n",
    )
    .unwrap();
    let out = scratch("pairs.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["synth", "--backend", "cpu", "--chunk-tokens", "48", "--max-tokens", "120", "--batch", "3", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(model())
        .status()
        .unwrap();
    assert!(status.success());
    let pairs = rows(&std::fs::read_to_string(&out).unwrap());
    assert!(!pairs.is_empty(), "no pairs were read from the model's output");
    for row in &pairs {
        assert!(!row["instruction"].as_str().unwrap().trim().is_empty());
        assert!(!row["response"].as_str().unwrap().trim().is_empty());
    }
    let augmented = std::fs::read_to_string(out.with_file_name("pairs.augmented.jsonl")).unwrap();
    let texts = rows(&augmented);
    assert!(texts.len() >= 2, "the text should make several chunks: {}", texts.len());
    // Each item is its chunk of the input followed by the pairs about it.
    let raw = std::fs::read_to_string(&input).unwrap();
    for t in &texts {
        let text = t["text"].as_str().unwrap();
        let head: String = text.chars().take(30).collect();
        assert!(raw.contains(&head), "{text:?} does not start with a piece of the input");
        assert!(text.contains("Question: ") && text.contains("Answer: "), "{text:?}");
    }
}
