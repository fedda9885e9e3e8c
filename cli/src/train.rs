//! `aviary train`: fine-tune a LoRA adapter on instruction data (ShareGPT, OpenAI messages or Alpaca JSONL — the
//! three formats Magpie exports), as ch. 7 of *Build a Large Language Model From Scratch* does, with the base frozen
//! in its file's quantization. Progress on stderr (step, loss, tokens/s, time left), one JSON line per step in
//! OUT/metrics.jsonl, a checkpoint in OUT/checkpoint/ every `--checkpoint-every` steps (what `--resume` continues),
//! and at the end the adapter as a PEFT folder in OUT/adapter/ and a llama.cpp GGUF LoRA, OUT/adapter.gguf.

use crate::load::{load, Loaded, ModelArgs};
use anyhow::{bail, Context, Result};
use engine::lora::Target;
use engine::train::data::{encode, records_from_rows, PromptStyle, Record};
use engine::train::export::{checkpoint_files, peft_files, read_checkpoint};
use engine::train::optim::AdamW;
use engine::train::{Example, TrainBackend, TrainSettings, Trainer};
use futures::executor::block_on;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Instruction data: JSONL in ShareGPT, OpenAI-messages or Alpaca form (each row's first instruction and reply).
    #[arg(long)]
    pub data: PathBuf,
    /// Where the adapter, the checkpoint and metrics.jsonl go.
    #[arg(long)]
    pub out: PathBuf,
    /// The prompt around each instruction: chat (the model's own template), alpaca or phi3.
    #[arg(long, default_value = "chat")]
    pub style: String,
    /// Score only the response: the instruction's own tokens are not predicted (ch. 7, exercise 7.2).
    #[arg(long)]
    pub mask_instructions: bool,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// Projections to adapt, comma-separated: q,k,v,o,gate,up,down.
    #[arg(long, default_value = "q,k,v,o,gate,up,down")]
    pub targets: String,
    /// Peak learning rate (warm-up to it, then a cosine decay to a tenth of it).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Clip the gradients' global norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Examples per batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Batches whose gradients make one step.
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Longest example in tokens; longer ones are cut (and counted).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    #[arg(long, default_value_t = 123)]
    pub seed: u64,
    /// The share of examples held out for the validation loss.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    /// Steps between checkpoints (and validation losses).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
    /// Memory for a batch's activations, in MiB: above it each layer's forward runs again in the backward pass
    /// (about a third more arithmetic, the same numbers).
    #[arg(long, default_value_t = engine::train::DEFAULT_TAPE_BUDGET >> 20)]
    pub tape_mib: usize,
    /// Run at most this many steps now, then write a checkpoint and stop (continue with --resume).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Continue the run whose checkpoint is in this folder (its settings win over the ones given here).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Skip data lines that cannot be read (each is named on stderr) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

fn targets(list: &str) -> Result<Vec<Target>> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let name = match t {
                "gate" | "up" | "down" | "q" | "k" | "v" | "o" => format!("{t}_proj"),
                other => other.to_string(),
            };
            Target::ALL
                .into_iter()
                .find(|x| x.hf_name() == name)
                .with_context(|| format!("--targets: `{t}` is not one of q, k, v, o, gate, up, down"))
        })
        .collect()
}

fn settings(a: &Args) -> Result<TrainSettings> {
    let s = TrainSettings {
        rank: a.rank,
        alpha: a.alpha,
        targets: targets(&a.targets)?,
        optimizer: AdamW { lr: a.lr, weight_decay: a.weight_decay, ..AdamW::default() },
        warmup_steps: a.warmup,
        clip: (a.clip > 0.0).then_some(a.clip),
        epochs: a.epochs,
        batch: a.batch,
        accum: a.accum,
        seed: a.seed,
        val_fraction: a.val_fraction,
    };
    s.validate()?;
    Ok(s)
}

/// The data file's rows as records; unreadable lines stop the run, or are skipped and named.
fn records(a: &Args) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(&a.data).with_context(|| format!("reading {}", a.data.display()))?;
    let imported = dataset::formats::import(&text);
    for e in &imported.errors {
        eprintln!("aviary: {}:{}: {}", a.data.display(), e.line, e.message);
    }
    if !imported.errors.is_empty() && !a.skip_bad_lines {
        bail!(
            "{} line(s) of {} cannot be read (named above): fix them, or pass --skip-bad-lines",
            imported.errors.len(),
            a.data.display()
        );
    }
    let records = records_from_rows(&imported.rows);
    let dropped = imported.rows.len() - records.len();
    if dropped > 0 {
        eprintln!("aviary: {dropped} row(s) without both an instruction and a response were left out");
    }
    if records.is_empty() {
        bail!("{} holds no instruction with a response to train on", a.data.display());
    }
    Ok(records)
}

pub fn run(a: Args) -> Result<()> {
    let style: PromptStyle = a.style.parse()?;
    let settings = settings(&a)?;
    let records = records(&a)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let loaded = load(&a.model)?;
    crate::on_backend!(loaded, m => run_on(&a, m, style, settings, &records))
}

fn run_on<B: TrainBackend>(a: &Args, m: &Loaded<B>, style: PromptStyle, settings: TrainSettings, records: &[Record]) -> Result<()> {
    let tokenizer = m.files.tokenizer.as_ref().context(
        "this model has no tokenizer, so the data cannot be encoded: use a .gguf, or a folder with tokenizer.json",
    )?;
    let template = m.chat_template()?;
    let mut truncated = 0;
    let examples: Vec<Example> = records
        .iter()
        .map(|r| {
            let e = encode(tokenizer, &template, style, r, a.mask_instructions, a.max_len)?;
            truncated += usize::from(e.truncated);
            Ok(e.example)
        })
        .collect::<engine::Result<_>>()?;
    if truncated > 0 {
        eprintln!("aviary: {truncated} of {} examples were longer than --max-len {} and were cut", examples.len(), a.max_len);
    }
    let c = &m.model.config;
    let (settings, state) = match &a.resume {
        Some(dir) => {
            let (s, state) = read_checkpoint(&read_dir(dir)?, c, c.rope_layout)
                .with_context(|| format!("resuming from {}", dir.display()))?;
            eprintln!("aviary: resuming at step {} from {}", state.step, dir.display());
            (s, state)
        }
        None => {
            let state = Trainer::fresh_state(&m.model, &settings);
            (settings, state)
        }
    };
    let mut trainer = Trainer::new(&m.backend, &m.model, settings, examples, state)?;
    trainer.tape_budget = a.tape_mib.saturating_mul(1 << 20);
    let base = a.model.model.display().to_string();
    eprintln!(
        "aviary: {} training and {} validation examples, {} steps ({} per epoch)",
        trainer.train_examples(),
        trainer.val_examples(),
        trainer.total_steps(),
        trainer.steps_per_epoch()
    );
    let metrics_path = a.out.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot write {}", metrics_path.display()))?;
    let bar = ProgressBar::new(trainer.total_steps());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} · {msg} · {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(trainer.state.step);
    let checkpoint = |t: &Trainer<B>| -> Result<()> {
        let files = checkpoint_files(&t.state, c, c.rope_layout, &t.settings, &base)?;
        write_dir(&a.out.join("checkpoint"), &files)
    };
    let t0 = Instant::now();
    let mut tokens = 0usize;
    let stop_at = a.stop_after.map(|n| trainer.state.step + n);
    while !trainer.done() {
        if stop_at.is_some_and(|s| trainer.state.step >= s) {
            checkpoint(&trainer)?;
            bar.abandon();
            eprintln!(
                "aviary: stopped after step {} of {}; continue with --resume {}",
                trainer.state.step,
                trainer.total_steps(),
                a.out.join("checkpoint").display()
            );
            return Ok(());
        }
        let r = block_on(trainer.step()).inspect_err(|_| bar.abandon())?;
        tokens += r.tokens;
        let rate = tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(r.step);
        bar.set_message(format!("loss {:.4} · {rate:.0} tokens/s", r.loss));
        if bar.is_hidden() {
            // Piped or logged: a plain line per step where the bar would draw.
            eprintln!("step {}/{} · loss {:.4} · {rate:.0} tokens/s", r.step, trainer.total_steps(), r.loss);
        }
        let mut line = serde_json::json!({
            "step": r.step, "epoch": r.epoch, "train_loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm,
            "tokens": r.tokens, "seconds": t0.elapsed().as_secs_f64(),
        });
        if r.step % a.checkpoint_every.max(1) == 0 || trainer.done() {
            if let Some(v) = block_on(trainer.validation_loss())? {
                line["val_loss"] = v.into();
                let said = format!("step {}: train loss {:.4}, validation loss {v:.4}", r.step, r.loss);
                if bar.is_hidden() {
                    eprintln!("{said}");
                } else {
                    bar.println(said);
                }
            }
            checkpoint(&trainer)?;
        }
        writeln!(metrics, "{line}").context("writing metrics.jsonl")?;
    }
    bar.finish();
    let files = peft_files(&trainer.state.params, c, c.rope_layout, &trainer.settings, &base)?;
    write_dir(&a.out.join("adapter"), &files)?;
    let gguf = engine::train::gguf_export::gguf_lora(&trainer.state.params, c, c.rope_layout, trainer.settings.alpha)?;
    let gguf_path = a.out.join("adapter.gguf");
    std::fs::write(&gguf_path, gguf).with_context(|| format!("writing {}", gguf_path.display()))?;
    eprintln!(
        "aviary: adapter written to {} (PEFT) and {} (llama.cpp); load either with --lora",
        a.out.join("adapter").display(),
        gguf_path.display()
    );
    Ok(())
}

/// Writes `files` into `dir` whole or not at all: into a fresh folder beside it, then swapped in, so a full disk or
/// a killed process leaves the last complete checkpoint.
fn write_dir(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for (name, bytes) in files {
        std::fs::write(tmp.join(name), bytes).with_context(|| format!("writing {} (is the disk full?)", tmp.join(name).display()))?;
    }
    let old = dir.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("replacing {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.insert(name, std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
    }
    Ok(files)
}
