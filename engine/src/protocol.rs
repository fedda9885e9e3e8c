//! The messages between the browser app's UI and the Web Worker that hosts the engine, defined once here so both
//! sides agree by construction. They travel as JSON strings through `postMessage`: small (one per token at most),
//! readable in the browser's devtools, and independent of how wasm-bindgen represents Rust values.
//!
//! Every request that can fail answers with `Event::Error`; nothing a page sends can make the worker panic.

use crate::backend::gpu::AdapterSummary;
use crate::batch::BatchStats;
use crate::chat::Message;
use crate::magpie::MagpieSettings;
use crate::synth::{ChunkResult, SynthSettings};
use crate::model::ModelFiles;
use crate::lora::LoraInfo;
use crate::session::{GenerateOptions, Generation, TokenInfo};
use crate::source::ByteSource;
use crate::error::{describe_load_error, LoadFailure};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// What the page asks of the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Load a GGUF model from a URL, replacing the loaded one. The worker reads it with HTTP Range requests, tensor by
    /// tensor, so the file is never held whole in memory.
    Load {
        url: String,
        #[serde(default)]
        backend: BackendChoice,
        /// Longest context (prompt + reply) to allocate for; the model's own, capped at 4096, when absent.
        #[serde(default)]
        context: Option<usize>,
    },
    /// Generate the assistant's next turn after `messages`, rendered in the model's chat template. `id` tags the
    /// events this generation produces.
    Generate {
        id: u64,
        messages: Vec<Message>,
        options: GenerateOptions,
    },
    /// Stop what is running (a load or a generation) as soon as possible. A generation ends with `Done` and
    /// `StopReason::Cancelled`; a load ends with an `Error` saying it was cancelled.
    Cancel,
    /// Load a model from files the user picked, which travel beside this request (`postMessage` carries `File`
    /// objects, not JSON): one `.gguf`, or a folder's `config.json`, `tokenizer.json`, (`tokenizer_config.json`,
    /// `model.safetensors.index.json`) and `*.safetensors`. Replaces the loaded model, like `Load`.
    LoadFiles {
        #[serde(default)]
        backend: BackendChoice,
        #[serde(default)]
        context: Option<usize>,
    },
    /// List the models kept in the browser's storage; answered with `Event::Cache`.
    ListCache,
    /// Remove a model (by the URL it was downloaded from) from the browser's storage; answered with `Event::Cache`.
    DeleteCached { url: String },
    /// The loaded model's Magpie pre-query template after an optional system prompt; answered with
    /// `Event::PreQuery`.
    PreQuery {
        #[serde(default)]
        system_prompt: Option<String>,
    },
    /// Generate Magpie rows for `samples` (sample indices; a row depends only on its index, the seed and the
    /// settings, so a paused run resumes by asking for the indices it has not got yet), `batch` at a time. Answered
    /// with `MagpieRow` per row in the order of `samples`, then `BatchDone`. `Cancel` stops it (rows made so far
    /// have been sent).
    Magpie {
        id: u64,
        settings: MagpieSettings,
        samples: Vec<u64>,
        batch: usize,
    },
    /// Load a LoRA adapter for the loaded model from a URL (a `.gguf` adapter, or a PEFT folder's URL whose
    /// `adapter_config.json` and `adapter_model.safetensors` sit under it), cached like models. Answered with
    /// `LoraLoaded`, or `LoraError` (the model and the other adapters stay loaded either way).
    LoadLora { url: String },
    /// Load a LoRA adapter from picked files travelling beside the request: one `.gguf`, or a PEFT folder's
    /// `adapter_config.json` + `adapter_model.safetensors`.
    LoadLoraFiles,
    /// Forget a loaded adapter; answered with `LoraRemoved`.
    RemoveLora { id: u64 },
    /// Tag rows with the loaded model as judge: `Tagged` per row, then `BatchDone`.
    Judge {
        id: u64,
        /// (row id, instruction)
        rows: Vec<(String, String)>,
        batch: usize,
    },
    /// Instruction synthesis over raw text: `SynthChunk` per chunk in order, then `BatchDone`.
    Synth {
        id: u64,
        text: String,
        settings: SynthSettings,
        batch: usize,
    },
    /// Fine-tune a LoRA adapter on the loaded model: `TrainStarted`, `TrainStep` per step (checkpoints go to the
    /// browser's storage), then the adapter as `LoraLoaded` and `TrainDone`. `Cancel` pauses it after the current
    /// step with a checkpoint (`TrainDone { paused: true }`); `resume` continues the run named `job.name` from its
    /// latest checkpoint with its stored records and settings.
    Train {
        id: u64,
        job: crate::train::job::TrainJob,
        #[serde(default)]
        resume: bool,
    },
    /// The runs whose checkpoints the browser keeps; answered with `Event::Checkpoints`.
    ListCheckpoints,
    /// Forgets run `name`'s checkpoints.
    DeleteCheckpoint { name: String },
    /// An adapter trained in this worker (by its LoRA id) as a file: answered with `Event::AdapterFile`.
    ExportAdapter { id: u64, format: AdapterFormat },
    /// Two configurations of the loaded model (adapter choices; none is the base) answer `instructions` greedily, and
    /// each answer is compared under both token by token: `Compared` per answer, then `CompareDone`. With `teacher`
    /// (a model's URL), side A is that model instead — a teacher beside the loaded student, which must share its
    /// vocabulary — loaded for the comparison alone (`CompareLoading` while it loads).
    Compare {
        id: u64,
        instructions: Vec<String>,
        a: Vec<crate::session::LoraChoice>,
        b: Vec<crate::session::LoraChoice>,
        max_tokens: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        teacher: Option<String>,
        /// Score every answer from 0 to 100 with ch. 7's judge prompt, by this model (`CompareScored` per answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        judge: Option<Judge>,
        /// Each instruction's reference answer for the judge (empty or missing: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        references: Vec<String>,
    },
}

/// Which model judges a comparison's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judge {
    /// The loaded model without adapters.
    Base,
    /// The comparison's teacher model.
    Teacher,
}

/// How a trained adapter is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterFormat {
    /// adapter_config.json + adapter_model.safetensors in a zip.
    PeftZip,
    /// A llama.cpp GGUF LoRA.
    Gguf,
}

/// The two configurations of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareSide {
    A,
    B,
}

/// Which backend the worker should run the model on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// WebGPU when the browser offers an adapter, the CPU otherwise.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

/// What the worker tells the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The worker's message handler is installed: requests sent from now on are heard.
    Started,
    /// An adapter is loaded and fitted to the model; generations name it by `id` (`GenerateOptions::lora`).
    LoraLoaded {
        id: u64,
        name: String,
        info: LoraInfo,
        /// The URL it came from (None for picked files): what a share link or a reload names.
        #[serde(default)]
        url: Option<String>,
        bytes: u64,
    },
    /// An adapter could not be loaded; nothing else changed.
    LoraError { name: String, message: String },
    LoraRemoved { id: u64 },
    /// Work in progress: `done` of `total` units of `stage`.
    Progress { stage: Stage, done: u64, total: u64 },
    /// A model is loaded and can generate. `origin` says where its bytes came from (absent from older workers).
    Ready {
        card: ModelCard,
        backend: BackendInfo,
        stats: LoadStats,
        #[serde(default)]
        origin: Option<Origin>,
    },
    /// A piece of generated text (never splits a character); `token` is the id that completed it. `info` holds the
    /// likeliest tokens at that step when the request's options asked for candidates.
    Token {
        id: u64,
        token: u32,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        info: Option<TokenInfo>,
    },
    /// A generation ended; `generation.text` is the whole reply.
    Done { id: u64, generation: Generation },
    /// A request failed. `id` names the generation it belongs to, if any. `model_lost` says no model is loaded
    /// any more: a load opens and checks the new model's files while the previous one stays loaded, so one that
    /// fails there (not a model, not found, incomplete, unsupported) or is cancelled there keeps it; only one that
    /// fails while the weights load, after the previous model made room, leaves none. A failed load's `message`
    /// is in the user's words and `detail` holds the technical text.
    Error {
        id: Option<u64>,
        message: String,
        #[serde(default)]
        model_lost: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The pre-query template (`template`), or why it cannot be derived (`error`: the user can type one). `notes` say
    /// what the user should know (a built-in template stood in for a missing one; a base model).
    PreQuery {
        template: Option<String>,
        error: Option<String>,
        notes: Vec<String>,
    },
    /// One finished Magpie row of run `id`.
    MagpieRow {
        id: u64,
        row: dataset::Row,
        stats: BatchStats,
    },
    /// Judge tags for the row with id `row_id` (empty when the judge's answer was unreadable).
    Tagged {
        id: u64,
        row_id: String,
        tags: dataset::Tags,
        stats: BatchStats,
    },
    /// One chunk of a synthesis run: its pairs and whatever could not be parsed. `total` chunks in all.
    SynthChunk {
        id: u64,
        result: ChunkResult,
        total: usize,
        stats: BatchStats,
    },
    /// A Magpie, judge or synthesis run ended (`cancelled` when asked to stop).
    BatchDone {
        id: u64,
        stats: BatchStats,
        cancelled: bool,
    },
    /// The models kept in the browser's storage, newest first. `store` is where they are kept (absent when the
    /// browser offers no storage to the worker, and then `note` says why).
    Cache {
        entries: Vec<CacheEntry>,
        store: Option<Store>,
        #[serde(default)]
        note: Option<String>,
    },
    /// A training run began (or resumed at `step`); `truncated` examples were cut to the maximum length.
    TrainStarted {
        id: u64,
        name: String,
        step: u64,
        total_steps: u64,
        train_examples: usize,
        val_examples: usize,
        truncated: usize,
    },
    TrainStep { id: u64, progress: crate::train::job::TrainProgress },
    /// The run ended: finished, or paused with a checkpoint to resume from.
    TrainDone { id: u64, paused: bool, step: u64, total_steps: u64 },
    Checkpoints { runs: Vec<crate::train::job::CheckpointInfo> },
    /// An exported adapter's file (base64, as JSON carries no bytes).
    AdapterFile { name: String, mime: String, base64: String },
    /// One answer of a comparison: side `side`'s answer to instruction `index`, its token pieces, the texts of every
    /// candidate shown (pairs: an internally tagged enum cannot read a map with number keys), and the comparison.
    Compared {
        id: u64,
        index: usize,
        side: CompareSide,
        answer: String,
        pieces: Vec<String>,
        texts: Vec<(u32, String)>,
        comparison: crate::compare::Comparison,
    },
    /// The judge's score (None: its answer held no number from 0 to 100) of side `side`'s answer to instruction
    /// `index`, and the judge's own words.
    CompareScored { id: u64, index: usize, side: CompareSide, score: Option<u8>, reply: String },
    /// The teacher of comparison `id` loading: bytes or tensors done of `total` at `stage`.
    CompareLoading { id: u64, stage: Stage, done: u64, total: u64 },
    CompareDone { id: u64, cancelled: bool },
}

/// Where the worker keeps downloaded models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// The Origin Private File System: one file per model, read at offsets.
    Opfs,
    /// Cache Storage (`caches`), where OPFS is unavailable.
    CacheStorage,
}

impl Store {
    pub fn label(self) -> &'static str {
        match self {
            Store::Opfs => "the browser's private file system (OPFS)",
            Store::CacheStorage => "the browser's Cache Storage",
        }
    }
}

/// Where a loaded model's bytes came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Downloaded whole into the browser's storage by this load, then read from there.
    Network { store: Store },
    /// Found complete in the browser's storage: nothing was downloaded.
    Cache { store: Store },
    /// Read from the server with HTTP Range requests, because no storage was usable (`reason` says why).
    Streamed { reason: String },
    /// Files the user picked or dropped.
    Local,
}

/// A model kept in the browser's storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The URL it was downloaded from (absolute), which is also its key.
    pub url: String,
    /// Its file name.
    pub name: String,
    pub bytes: u64,
    /// When the download finished (ms since the epoch, `Date.now()`); when it started for a partial one.
    pub saved_at_ms: f64,
    /// False for a download that did not finish (an interrupted tab): never loaded from, only deleted or replaced.
    pub complete: bool,
    /// A LoRA adapter's file (`Request::LoadLora`), not a model (absent from older workers).
    #[serde(default)]
    pub adapter: bool,
}

/// The phases of work the worker reports progress for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Opening the device (WebGPU adapter or CPU).
    Backend,
    /// Reading the file's header: metadata, tokenizer, tensor index (bytes).
    Header,
    /// Downloading the whole file into the browser's storage (bytes; `total` is 0 when the server does not say).
    Download,
    /// Streaming weights from the source to the backend (bytes).
    Weights,
}

/// Where the model runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendInfo {
    Gpu {
        adapter: AdapterSummary,
        f16: bool,
    },
    /// `reason` says why the GPU is not used, when it was not asked for explicitly (a sentence: "WebGPU
    /// unavailable: …", or why Auto preferred the CPU).
    Cpu {
        reason: Option<String>,
        /// Whether the worker is a build with wasm SIMD128 (the page starts one where the browser runs SIMD128).
        #[serde(default)]
        simd128: bool,
        /// Whether its fused multiply-adds are one instruction: the build with relaxed SIMD, in a browser whose
        /// relaxed multiply-add is fused (`engine::backend::cpu::fused_madd`); else they are emulated.
        #[serde(default)]
        fused_madd: bool,
        /// Threads the CPU kernels split their work over: one, or every core in the threaded build (shared memory,
        /// which the page gets where it is cross-origin isolated).
        #[serde(default = "one_thread")]
        threads: u32,
    },
}

fn one_thread() -> u32 {
    1
}

impl BackendInfo {
    /// A short label for a status line; on the CPU it says which wasm build runs (" · SIMD128" for a SIMD one, then
    /// " · FMA" where its fused multiply-adds are one instruction, " · N threads" in the threaded build) and why WebGPU
    /// is not used, when it was not a choice.
    pub fn label(&self) -> String {
        let mut cpu = match self {
            BackendInfo::Cpu { simd128: true, fused_madd: true, .. } => "CPU (wasm) · SIMD128 · FMA",
            BackendInfo::Cpu { simd128: true, .. } => "CPU (wasm) · SIMD128",
            _ => "CPU (wasm)",
        }
        .to_string();
        if let BackendInfo::Cpu { threads: threads @ 2.., .. } = self {
            cpu += &format!(" · {threads} threads");
        }
        match self {
            // Browsers often report no adapter name (SwiftShader's is empty).
            BackendInfo::Gpu { adapter, .. } if adapter.name.is_empty() => "WebGPU".to_string(),
            BackendInfo::Gpu { adapter, .. } => format!("WebGPU ({})", adapter.name),
            BackendInfo::Cpu { reason: Some(why), .. } => format!("{cpu} — {why}"),
            BackendInfo::Cpu { reason: None, .. } => cpu,
        }
    }
}

/// How a load went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadStats {
    /// Opening the backend, reading the header and streaming the weights.
    pub load_ms: f64,
    /// The worker's wasm memory after the load. Wasm memory never shrinks, so this is its peak during the load; the
    /// weights stream through it tensor by tensor, so it stays well below the model file's size.
    pub wasm_memory_bytes: u64,
}

/// What the UI shows about a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The file's own name (GGUF `general.name`) or the last part of its URL.
    pub name: String,
    pub source: String,
    pub arch: String,
    pub parameters: u64,
    pub file_bytes: u64,
    pub weight_bytes: u64,
    /// Bytes per weight type, largest share first.
    pub quantization: Vec<(String, u64)>,
    pub layers: usize,
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab_size: usize,
    /// The model's trained context length.
    pub context_length: usize,
    /// The context the session allocated for (prompt + reply).
    pub session_context: usize,
    /// The chat template's Jinja source, and whether it is a built-in one (the file carries none).
    pub chat_template: String,
    pub chat_template_builtin: bool,
    /// The model's own sampling defaults (generation_config.json, or a GGUF's general.sampling.*), if it has any.
    #[serde(default)]
    pub sampling: Option<crate::sampling::SamplingParams>,
}

impl ModelCard {
    pub fn new<S: ByteSource>(
        files: &ModelFiles<S>,
        chat_template: &str,
        session_context: usize,
    ) -> Self {
        let source = files.sources.first().map(|s| s.name()).unwrap_or_default();
        let name = files
            .metadata
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| source.rsplit('/').next().unwrap_or(&source).to_string());
        let cfg = &files.config;
        ModelCard {
            name,
            source,
            arch: cfg.arch.name().to_string(),
            parameters: files.parameters(),
            file_bytes: files.sources.iter().map(|s| s.len()).sum(),
            weight_bytes: files.weight_bytes(),
            quantization: files
                .quantization_mix()
                .into_iter()
                .map(|(t, b)| (t.name().to_string(), b))
                .collect(),
            layers: cfg.num_hidden_layers,
            hidden_size: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            vocab_size: cfg.vocab_size,
            context_length: cfg.max_position_embeddings,
            session_context,
            chat_template: chat_template.to_string(),
            chat_template_builtin: files.chat_template.is_none(),
            sampling: files.sampling.clone(),
        }
    }
}

/// The context a session allocates when the page does not say: the model's own, capped at 4096 (as the CLI does).
pub fn default_context(files_context: usize, requested: Option<usize>) -> usize {
    requested.unwrap_or(files_context.min(4096)).max(1)
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Malformed {
        format: crate::error::Format::Json,
        detail: format!("{what}: {e}"),
    })
}

impl Request {
    pub fn to_json(&self) -> String {
        // Serialising these plain enums cannot fail (string keys, finite shapes); fall back to a harmless request.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"cancel"}"#.to_string())
    }

    pub fn from_json(s: &str) -> Result<Self> {
        from_json(s, "request")
    }
}

impl Event {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({ "type": "error", "id": null, "message": format!("unserialisable event: {e}") }).to_string()
        })
    }

    pub fn from_json(s: &str) -> Result<Self> {
        from_json(s, "event")
    }

    pub fn error(id: Option<u64>, message: impl std::fmt::Display) -> Self {
        Event::Error {
            id,
            message: message.to_string(),
            model_lost: false,
            detail: None,
        }
    }

    /// A failed load, told in the user's words (see [`describe_load_error`]) with the technical text as detail.
    pub fn load_error(e: &Error, model_lost: bool) -> Self {
        let LoadFailure { summary, detail } = describe_load_error(e);
        Event::Error {
            id: None,
            message: summary,
            model_lost,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Stats, StopReason};

    #[test]
    fn requests_round_trip_through_json() {
        let reqs = [
            Request::Load {
                url: "models/a.gguf".into(),
                backend: BackendChoice::Cpu,
                context: Some(512),
            },
            Request::Generate {
                id: 7,
                messages: vec![Message::system("be brief"), Message::user("hi")],
                options: GenerateOptions {
                    max_tokens: 24,
                    ..Default::default()
                },
            },
            Request::Cancel,
            Request::LoadFiles {
                backend: BackendChoice::Gpu,
                context: None,
            },
            Request::ListCache,
            Request::DeleteCached {
                url: "http://127.0.0.1:8080/models/a.gguf".into(),
            },
        ];
        for r in reqs {
            assert_eq!(Request::from_json(&r.to_json()).unwrap(), r);
        }
        // Optional fields may be left out by hand-written requests (tests, devtools).
        let r = Request::from_json(r#"{"type":"load","url":"x.gguf"}"#).unwrap();
        assert_eq!(
            r,
            Request::Load {
                url: "x.gguf".into(),
                backend: BackendChoice::Auto,
                context: None
            }
        );
    }

    #[test]
    fn events_round_trip_through_json() {
        let events = [
            Event::Started,
            Event::Progress {
                stage: Stage::Weights,
                done: 10,
                total: 100,
            },
            Event::Token {
                id: 1,
                token: 42,
                text: "é".into(),
                info: None,
            },
            Event::Token {
                id: 1,
                token: 42,
                text: "é".into(),
                info: Some(TokenInfo {
                    candidates: vec![crate::session::Candidate {
                        token: 42,
                        text: "é".into(),
                        p: 0.5,
                    }],
                    support: 128,
                }),
            },
            Event::Done {
                id: 1,
                generation: Generation {
                    tokens: vec![1, 2],
                    text: "ok".into(),
                    stop_reason: StopReason::Cancelled,
                    stats: Stats::default(),
                },
            },
            Event::error(Some(3), "boom"),
            Event::Progress {
                stage: Stage::Download,
                done: 5,
                total: 0,
            },
            Event::Cache {
                entries: vec![
                    CacheEntry {
                        url: "https://example.org/m.gguf".into(),
                        name: "m.gguf".into(),
                        bytes: 98_000_000,
                        saved_at_ms: 1.7e12,
                        complete: true,
                        adapter: false,
                    },
                    CacheEntry {
                        url: "u".into(),
                        name: "u".into(),
                        bytes: 3,
                        saved_at_ms: 0.5,
                        complete: false,
                        adapter: true,
                    },
                ],
                store: Some(Store::Opfs),
                note: None,
            },
            Event::Cache {
                entries: vec![],
                store: None,
                note: Some("no OPFS".into()),
            },
        ];
        for e in events {
            assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
        }
    }

    #[test]
    fn ready_carries_its_origin_and_older_events_still_parse() {
        let card = ModelCard {
            name: "m".into(),
            source: "m.gguf".into(),
            arch: "llama".into(),
            parameters: 1,
            file_bytes: 2,
            weight_bytes: 1,
            quantization: vec![("Q4_1".into(), 1)],
            layers: 1,
            hidden_size: 8,
            heads: 1,
            kv_heads: 1,
            vocab_size: 4,
            context_length: 16,
            session_context: 16,
            chat_template: String::new(),
            chat_template_builtin: true,
            sampling: None,
        };
        let backend = BackendInfo::Cpu { reason: None, simd128: false, fused_madd: false, threads: 1 };
        for origin in [
            Some(Origin::Network { store: Store::Opfs }),
            Some(Origin::Cache {
                store: Store::CacheStorage,
            }),
            Some(Origin::Streamed {
                reason: "no storage".into(),
            }),
            Some(Origin::Local),
            None,
        ] {
            let e = Event::Ready {
                card: card.clone(),
                backend: backend.clone(),
                stats: LoadStats::default(),
                origin,
            };
            assert_eq!(Event::from_json(&e.to_json()).unwrap(), e);
        }
        // A Ready written before `origin` existed has none.
        let mut old = serde_json::to_value(Event::Ready {
            card,
            backend,
            stats: LoadStats::default(),
            origin: Some(Origin::Local),
        })
        .unwrap();
        old.as_object_mut().unwrap().remove("origin");
        assert!(matches!(
            Event::from_json(&old.to_string()).unwrap(),
            Event::Ready { origin: None, .. }
        ));
        let tagged = serde_json::to_value(Origin::Cache { store: Store::Opfs }).unwrap();
        assert_eq!(
            tagged,
            serde_json::json!({ "kind": "cache", "store": "opfs" })
        );
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        assert!(Request::from_json("{").is_err());
        assert!(Request::from_json(r#"{"type":"nope"}"#).is_err());
        assert!(Event::from_json("null").is_err());
    }

    #[test]
    fn default_context_caps_at_4096() {
        assert_eq!(default_context(8192, None), 4096);
        assert_eq!(default_context(2048, None), 2048);
        assert_eq!(default_context(8192, Some(100)), 100);
        assert_eq!(default_context(8192, Some(0)), 1);
    }
}
