//! Helpers shared by the integration tests: fixture paths, model loading, and logit comparison that names the first
//! place where engine and reference part ways.
#![allow(dead_code)]

use engine::backend::cpu::CpuBackend;
use engine::model::{ModelFiles, Transformer};
use engine::session::Session;
use engine::source::FileSource;
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("engine/ has a parent").to_path_buf()
}

pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Real models live in the setup script's cache, outside git. Missing models fail the test: `make test` fetches them.
pub fn real_model(file: &str) -> PathBuf {
    let p = cache_dir().join("models").join(file);
    assert!(p.exists(), "{} is missing: run `scripts/fetch-models.sh` (make test does)", p.display());
    p
}

/// Third-party reference data (llama.cpp's vocabulary tests, real chat templates), fetched by
/// scripts/fetch-reference.sh from the llama-cpp-python sdist on PyPI into the cache.
pub fn reference(rel: &str) -> PathBuf {
    let p = cache_dir().join("reference").join(rel);
    assert!(p.exists(), "{} is missing: run `scripts/fetch-reference.sh` (make test does)", p.display());
    p
}

fn cache_dir() -> PathBuf {
    std::env::var_os("AVIARY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aviary"))
}

pub fn as_u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("an array of ids").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

pub fn as_matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("an array of rows")
        .iter()
        .map(|row| row.as_array().expect("a row").iter().map(|x| x.as_f64().expect("a number") as f32).collect())
        .collect()
}

pub struct CpuModel {
    pub files: ModelFiles<FileSource>,
    pub backend: CpuBackend,
    pub model: Transformer<CpuBackend>,
}

pub fn load_cpu(path: &Path) -> CpuModel {
    let files = ModelFiles::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let backend = CpuBackend::new();
    let model = futures::executor::block_on(files.load(&backend, &mut |_, _| {}))
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    CpuModel { files, backend, model }
}

impl CpuModel {
    pub fn logits(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut s = Session::new(&self.backend, &self.model, None, tokens.len() + 1).expect("session");
        futures::executor::block_on(s.logits(tokens)).expect("logits")
    }

    pub fn greedy(&self, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut s = Session::new(&self.backend, &self.model, self.files.tokenizer.as_ref(), prompt.len() + n + 1)
            .expect("session");
        let options = engine::session::GenerateOptions { max_tokens: n, stop_at_eos: false, ..Default::default() };
        futures::executor::block_on(s.generate(prompt, &options, &mut |_, _| {})).expect("generate").tokens
    }
}

/// max |got - want| / max |want| for each position; panics naming the first position over `tol` and its worst index.
pub fn assert_logits_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: {} positions, reference has {}", got.len(), want.len());
    let mut worst = 0f32;
    for (pos, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: position {pos} has {} logits, reference {}", g.len(), w.len());
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
        let (idx, diff) = g.iter().zip(w).map(|(a, b)| (a - b).abs()).enumerate().fold((0, 0f32), |best, (i, d)| {
            if d > best.1 || d.is_nan() {
                (i, d)
            } else {
                best
            }
        });
        let rel = diff / scale;
        worst = worst.max(rel);
        assert!(
            rel <= tol,
            "{what}: position {pos}, vocab index {idx}: got {} want {} (max|diff|/max|ref| = {rel:.3e} > {tol:.0e})",
            g[idx],
            w[idx]
        );
    }
    worst
}

pub fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}
