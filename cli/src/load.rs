//! Opening a model and choosing a backend, shared by every command.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use engine::backend::cpu::CpuBackend;
use engine::backend::gpu::{GpuBackend, GpuOptions};
use engine::backend::Backend;
use engine::chat::{ChatTemplate, Message};
use engine::lora::{Adapter, LoraFile, LoraStack};
use engine::model::{ModelFiles, Transformer};
use engine::source::FileSource;
use engine::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Cpu,
    Gpu,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file, or a directory with config.json + *.safetensors (+ tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to run the model: the GPU when an adapter exists, else the CPU.
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// On the GPU, keep f32 arithmetic even where the adapter offers shader-f16 (which otherwise holds the KV cache
    /// and the attention products in f16).
    #[arg(long)]
    pub gpu_f32: bool,
    /// On the GPU, reproduce the CPU backend bit for bit (f32, ggml's operation order, a software fused
    /// multiply-add): the same tokens as `--backend cpu`, slower than the default GPU path.
    #[arg(long)]
    pub gpu_exact: bool,
    /// Longest context (prompt + reply) to allocate for; defaults to the model's, capped at 4096.
    #[arg(long)]
    pub context: Option<usize>,
    /// A LoRA adapter to apply, as PATH[:SCALE] (repeatable): a PEFT folder (adapter_config.json +
    /// adapter_model.safetensors) or a llama.cpp GGUF adapter; SCALE multiplies the adapter's own alpha/r (default 1).
    #[arg(long = "lora", value_name = "PATH[:SCALE]")]
    pub lora: Vec<String>,
}

pub struct Loaded<B: Backend> {
    pub files: ModelFiles<FileSource>,
    pub backend: B,
    pub model: Transformer<B>,
    pub context: usize,
    /// The `--lora` adapters: what every session applies.
    pub lora: LoraStack<B>,
}

/// A model loaded on whichever backend was chosen.
pub enum AnyLoaded {
    Cpu(Loaded<CpuBackend>),
    Gpu(Box<Loaded<GpuBackend>>),
}

/// Runs `$body` with `$m` bound to the `&Loaded<B>` of either backend.
#[macro_export]
macro_rules! on_backend {
    ($loaded:expr, $m:ident => $body:expr) => {
        match $loaded {
            $crate::load::AnyLoaded::Cpu(ref $m) => $body,
            $crate::load::AnyLoaded::Gpu(ref boxed) => {
                let $m = &**boxed;
                $body
            }
        }
    };
}

impl<B: Backend> Loaded<B> {
    /// A session over the whole context (at least `min_context` positions) applying the `--lora` adapters.
    pub fn session<'a>(&'a self, tokenizer: Option<&'a Tokenizer>, min_context: usize) -> Result<engine::session::Session<'a, B>> {
        let mut s = engine::session::Session::new(&self.backend, &self.model, tokenizer, self.context.max(min_context))?;
        s.set_lora(self.lora.clone())?;
        Ok(s)
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.files.tokenizer.as_ref().context("this model has no tokenizer (pass --tokens instead of --prompt)")
    }

    /// The model's own chat template, or the built-in one for its family (shared with the browser worker).
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        Ok(engine::prompt::chat_template(self.files.chat_template.as_ref(), self.tokenizer()?, self.files.config.arch))
    }

    /// Prompt ids: a user turn in the chat template (the template writes BOS itself), or the raw text with BOS
    /// added when the model asks for it.
    pub fn encode_prompt(&self, messages: &[Message], raw: Option<&str>) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        let ids = match raw {
            Some(text) => tok.encode(text, tok.add_bos_by_default())?,
            None => engine::prompt::encode_chat(&self.chat_template()?, tok, messages)?,
        };
        if ids.is_empty() {
            bail!("the prompt is empty after tokenisation");
        }
        Ok(ids)
    }
}

pub fn load(args: &ModelArgs) -> Result<AnyLoaded> {
    let files = ModelFiles::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let context = args.context.unwrap_or(files.config.max_position_embeddings.min(4096)).max(1);
    let gpu_options = GpuOptions { force_f32: args.gpu_f32, exact: args.gpu_exact, ..Default::default() };
    let gpu = match args.backend {
        Some(BackendChoice::Cpu) => None,
        Some(BackendChoice::Gpu) => Some(futures::executor::block_on(GpuBackend::new(&gpu_options))?),
        None => match futures::executor::block_on(GpuBackend::new(&gpu_options)) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("aviary: {e}; running on the CPU");
                None
            }
        },
    };
    let loaded = match gpu {
        Some(backend) => AnyLoaded::Gpu(Box::new(load_on(files, backend, context, args)?)),
        None => AnyLoaded::Cpu(load_on(files, CpuBackend::new(), context, args)?),
    };
    on_backend!(loaded, m => eprintln!("aviary: backend {}", m.backend.name()));
    Ok(loaded)
}

fn load_on<B: Backend>(files: ModelFiles<FileSource>, backend: B, context: usize, args: &ModelArgs) -> Result<Loaded<B>> {
    let model = futures::executor::block_on(files.load(&backend, &mut |_, _| {}))
        .with_context(|| format!("loading {}", args.model.display()))?;
    let lora = load_adapters(&backend, &model, args)?;
    Ok(Loaded { files, backend, model, context, lora })
}

pub fn parse_tokens(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u32>().with_context(|| format!("`{t}` is not a token id")))
        .collect()
}

impl<B: Backend> Loaded<B> {
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }
}

/// `PATH[:SCALE]` of `--lora`: the scale after the last colon when it parses as a number, else 1.
pub fn parse_lora_arg(s: &str) -> (PathBuf, f32) {
    if let Some((path, scale)) = s.rsplit_once(':') {
        if let Ok(v) = scale.parse::<f32>() {
            return (PathBuf::from(path), v);
        }
    }
    (PathBuf::from(s), 1.0)
}

/// The `--lora` adapters fitted to `model`, as the stack every session of the command applies.
fn load_adapters<B: Backend>(backend: &B, model: &Transformer<B>, args: &ModelArgs) -> Result<LoraStack<B>> {
    let mut active = Vec::new();
    for arg in &args.lora {
        let (path, scale) = parse_lora_arg(arg);
        if !scale.is_finite() {
            bail!("--lora {arg}: the scale must be a finite number");
        }
        let file = LoraFile::open(&path).with_context(|| format!("reading the adapter {}", path.display()))?;
        let name = path.file_name().map_or_else(|| arg.clone(), |n| n.to_string_lossy().into_owned());
        let adapter = Adapter::new(backend, model, &file, &name)
            .with_context(|| format!("applying the adapter {}", path.display()))?;
        let i = adapter.info.clone();
        eprintln!(
            "aviary: adapter {name} ({:?}, rank {}–{}, {} layers, {} parameters) at scale {scale}",
            i.kind, i.rank.0, i.rank.1, i.layers, i.parameters
        );
        active.push((Rc::new(adapter), scale));
    }
    Ok(LoraStack::new(active))
}
