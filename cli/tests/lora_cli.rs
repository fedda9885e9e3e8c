//! `aviary logits --lora` on the tiny HF Llama against PEFT's logits (tests/fixtures/lora): the folder at scale 1 and
//! at `:0.5`, two adapters at once, llama.cpp's GGUF conversion, and a clear failure for an adapter that does not fit.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

fn aviary_logits(loras: &[String], tokens: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aviary"));
    cmd.args(["logits", "--backend", "cpu", "--tokens", tokens, "--model"]).arg(fixture("tiny/llama"));
    for l in loras {
        cmd.arg("--lora").arg(l);
    }
    cmd.output().expect("running aviary")
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("lora/llama/reference.json")).unwrap()).unwrap()
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
}

/// max |got − want| / max |want| over every position.
fn rel_diff(got: &[Vec<f64>], want: &[Vec<f64>]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
    let diff = got.iter().flatten().zip(want.iter().flatten()).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[test]
fn logits_with_adapters_match_peft() {
    let r = reference();
    let tokens: Vec<String> = r["tokens"].as_array().unwrap().iter().map(|t| t.to_string()).collect();
    let tokens = tokens.join(",");
    let case = |name: &str| rows(&r["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap()["logits"]);
    let dir = |a: &str| fixture(&format!("lora/llama/{a}")).display().to_string();
    for (loras, want) in [
        (vec![dir("all")], "all"),
        (vec![format!("{}:0.5", dir("all"))], "all_half"),
        (vec![format!("{}:0.7", dir("all")), format!("{}:1.5", dir("rslora"))], "two"),
        (vec![dir("all.gguf")], "all"),
    ] {
        let out = aviary_logits(&loras, &tokens);
        assert!(out.status.success(), "{loras:?}: {}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = rel_diff(&rows(&got["logits"]), &case(want));
        assert!(d <= 1e-3, "{loras:?} vs PEFT's {want}: max|diff|/max|ref| = {d:.2e}");
    }
}

#[test]
fn an_adapter_for_another_model_fails_clearly() {
    let out = aviary_logits(&[fixture("lora/gemma3/all").display().to_string()], "1,2,3");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("applying the adapter") && err.contains("lora_A.weight"), "{err}");
}
