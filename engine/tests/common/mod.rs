//! Helpers shared by the integration tests: fixture paths, model loading, and logit comparison that names the first
//! place where engine and reference part ways.
#![allow(dead_code)]

mod logits;
#[allow(unused_imports)] // not every test compares logits
pub use logits::*;

use engine::backend::cpu::CpuBackend;
use engine::backend::gpu::{GpuBackend, GpuOptions};
use engine::backend::Backend;
use engine::model::{ModelFiles, Transformer};
use engine::session::Session;
use engine::source::FileSource;
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine/ has a parent")
        .to_path_buf()
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
    assert!(
        p.exists(),
        "{} is missing: run `scripts/fetch-models.sh` (make test does)",
        p.display()
    );
    p
}

/// Third-party reference data (llama.cpp's vocabulary tests, real chat templates), fetched by
/// scripts/fetch-reference.sh from the llama-cpp-python sdist on PyPI into the cache.
pub fn reference(rel: &str) -> PathBuf {
    let p = cache_dir().join("reference").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `scripts/fetch-reference.sh` (make test does)",
        p.display()
    );
    p
}

fn cache_dir() -> PathBuf {
    std::env::var_os("AVIARY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/aviary")
        })
}

pub struct Loaded<B: Backend> {
    pub files: ModelFiles<FileSource>,
    pub backend: B,
    pub model: Transformer<B>,
}

pub type CpuModel = Loaded<CpuBackend>;
pub type GpuModel = Loaded<GpuBackend>;

pub fn load_on<B: Backend>(path: &Path, backend: B) -> Loaded<B> {
    let files =
        ModelFiles::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let model = futures::executor::block_on(files.load(&backend, &mut |_, _| {}))
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    Loaded {
        files,
        backend,
        model,
    }
}

pub fn load_cpu(path: &Path) -> CpuModel {
    load_on(path, CpuBackend::new())
}

/// The GPU backend on this machine's adapter, or None (the test is skipped) when there is none. Under CI=true a
/// missing adapter fails: `make test` installs Mesa's Vulkan driver, so CI always has one.
pub fn gpu_backend(options: GpuOptions) -> Option<GpuBackend> {
    match futures::executor::block_on(GpuBackend::new(&options)) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI needs a GPU adapter: {e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// The GPU backend's f32 path (the one held to the CPU's bounds); tests of the f16 path ask for it explicitly.
pub fn load_gpu(path: &Path) -> Option<GpuModel> {
    load_gpu_with(path, f32_path())
}

pub fn f32_path() -> GpuOptions {
    GpuOptions {
        force_f32: true,
        ..Default::default()
    }
}

/// The GPU backend's exact path: the CPU backend's bits wherever a kernel has an exact twin.
pub fn exact_path() -> GpuOptions {
    GpuOptions {
        exact: true,
        ..Default::default()
    }
}

pub fn load_gpu_with(path: &Path, options: GpuOptions) -> Option<GpuModel> {
    gpu_backend(options).map(|b| load_on(path, b))
}

impl<B: Backend> Loaded<B> {
    pub fn logits(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut s =
            Session::new(&self.backend, &self.model, None, tokens.len() + 1).expect("session");
        futures::executor::block_on(s.logits(tokens)).expect("logits")
    }

    pub fn greedy(&self, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut s = Session::new(
            &self.backend,
            &self.model,
            self.files.tokenizer.as_ref(),
            prompt.len() + n + 1,
        )
        .expect("session");
        let options = engine::session::GenerateOptions {
            max_tokens: n,
            stop_at_eos: false,
            ..Default::default()
        };
        futures::executor::block_on(s.generate(prompt, &options, &mut |_, _| {}))
            .expect("generate")
            .tokens
    }

    /// `prompt` in one batch (every position's logits), then each of `continuation` decoded one token at a time onto
    /// the same cache: the prefill path and the decode path of one sequence.
    pub fn prefill_then_decode_logits(
        &self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Vec<Vec<f32>> {
        let mut cache = self
            .model
            .new_cache(&self.backend, prompt.len() + continuation.len())
            .unwrap();
        let out = self
            .model
            .forward(&self.backend, &mut cache, prompt, true)
            .unwrap();
        let mut rows = futures::executor::block_on(self.backend.to_host(&out)).unwrap();
        for &t in continuation {
            let out = self
                .model
                .forward(&self.backend, &mut cache, &[t], false)
                .unwrap();
            rows.extend(futures::executor::block_on(self.backend.to_host(&out)).unwrap());
        }
        rows
    }

    /// Token-by-token decode through the backend's forward pass, all logits read back.
    pub fn incremental_logits(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut cache = self.model.new_cache(&self.backend, tokens.len()).unwrap();
        let mut got = Vec::new();
        for &t in tokens {
            let out = self
                .model
                .forward(&self.backend, &mut cache, &[t], false)
                .unwrap();
            got.extend(futures::executor::block_on(self.backend.to_host(&out)).unwrap());
        }
        got
    }
}

pub fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
            if v > b.1 {
                (i, v)
            } else {
                b
            }
        })
        .0 as u32
}
