//! `aviary train` on the tiny Llama GGUF: metrics.jsonl with a line per step and validation losses, the PEFT adapter
//! that `--lora` loads; a run stopped (`--stop-after`) and resumed writes the same losses as one run straight
//! through; a malformed data line is named and stops the run unless skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aviary-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Twelve Alpaca rows (and, with `bad`, one broken line).
fn data(dir: &Path, bad: bool) -> PathBuf {
    let mut text = String::new();
    for name in ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu"] {
        text.push_str(&format!(
            "{{\"instruction\": \"Greet {name}.\", \"input\": \"\", \"output\": \"Hello, {name}!\"}}\n"
        ));
    }
    if bad {
        text.push_str("{\"instruction\": \"half a line\n");
    }
    let path = dir.join("data.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["train", "--backend", "cpu", "--style", "alpaca", "--epochs", "2", "--batch", "3", "--lr", "0.01"])
        .args(["--checkpoint-every", "2", "--model"])
        .arg(fixture("tiny/llama/model-q8_0.gguf"))
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("running aviary train")
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["train_loss"].as_f64().unwrap())
        })
        .collect()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "aviary train failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn trains_stops_resumes_and_exports() {
    let dir = scratch("run");
    let data = data(&dir, false);
    let straight = dir.join("straight");
    ok(&train(&data, &straight, &[]));
    let all = losses(&straight);
    // 12 rows: 1 held out (10 %, rounded), 11 in batches of 3 → 4 steps an epoch, 8 in all.
    assert_eq!(all.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("val_loss").count(), 4, "a validation loss at every checkpoint:\n{metrics}");
    for f in ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter.gguf", "checkpoint/optimizer.safetensors"] {
        assert!(straight.join(f).is_file(), "{f} is missing");
    }

    let parted = dir.join("parted");
    ok(&train(&data, &parted, &["--stop-after", "3"]));
    assert_eq!(losses(&parted).len(), 3);
    assert!(!parted.join("adapter").exists(), "a stopped run writes no final adapter");
    let resumed = train(&data, &parted, &["--resume", parted.join("checkpoint").to_str().unwrap()]);
    ok(&resumed);
    assert_eq!(losses(&parted), all, "stopping and resuming changed the losses");

    // The adapter loads where adapters load, and changes the model's logits.
    let logits = |lora: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_aviary"));
        c.args(["logits", "--backend", "cpu", "--tokens", "1,45,120,77", "--model"]);
        c.arg(fixture("tiny/llama/model-q8_0.gguf"));
        if let Some(l) = lora {
            c.arg("--lora").arg(l);
        }
        let o = c.output().unwrap();
        ok(&o);
        o.stdout
    };
    let with_peft = logits(Some(&straight.join("adapter")));
    assert_ne!(with_peft, logits(None), "the trained adapter changes nothing");
    assert_eq!(logits(Some(&straight.join("adapter.gguf"))), with_peft, "the GGUF export means another adapter");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_line_is_named_and_stops_unless_skipped() {
    let dir = scratch("bad");
    let data = data(&dir, true);
    let o = train(&data, &dir.join("out"), &["--stop-after", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a broken line must stop the run");
    assert!(err.contains("data.jsonl:13:") && err.contains("--skip-bad-lines"), "{err}");
    ok(&train(&data, &dir.join("out"), &["--stop-after", "1", "--skip-bad-lines"]));
    let _ = std::fs::remove_dir_all(&dir);
}
