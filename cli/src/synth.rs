//! `aviary synth`: Instruction Pre-Training's synthesis — raw text in, question–answer pairs about each chunk out,
//! written as ShareGPT JSONL rows, plus the instruction-augmented text for continued pretraining beside them.

use crate::load::{load, Loaded, ModelArgs};
use crate::magpie::{model_name, progress_bar, rate};
use anyhow::{bail, Context, Result};
use dataset::formats::{export, Format};
use dataset::GenInputConfigs;
use engine::backend::Backend;
use engine::batch::BatchRunner;
use engine::synth::{self, ChunkResult, SynthSettings};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The raw text (UTF-8).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Instruction pairs as ShareGPT JSONL; the augmented text goes beside it as FILE.augmented.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Longest chunk, in tokens.
    #[arg(long, default_value_t = 384)]
    pub chunk_tokens: usize,
    /// Pairs asked for per chunk.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
}

pub fn run(a: Args) -> Result<()> {
    let meta = std::fs::metadata(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    if meta.len() > synth::MAX_INPUT_BYTES as u64 {
        bail!("{} is {} MB; synthesis takes at most {} MB at once", a.input.display(), meta.len() >> 20, synth::MAX_INPUT_BYTES >> 20);
    }
    let text = std::fs::read_to_string(&a.input).with_context(|| format!("{} is not UTF-8 text", a.input.display()))?;
    // Fail on an unwritable output before any work.
    std::fs::write(&a.out, "").with_context(|| format!("cannot write {}", a.out.display()))?;
    let loaded = load(&a.model)?;
    crate::on_backend!(loaded, m => run_on(&a, m, &text))
}

fn run_on<B: Backend>(a: &Args, m: &Loaded<B>, text: &str) -> Result<()> {
    let tokenizer = m.tokenizer()?;
    let template = m.chat_template()?;
    let settings = SynthSettings {
        chunk_tokens: a.chunk_tokens,
        pairs: a.pairs,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        max_tokens: a.max_tokens,
    };
    let chunks = synth::chunks(text, tokenizer, &settings)?;
    if chunks.is_empty() {
        bail!("{} has no text", a.input.display());
    }
    let context = settings.context_needed().min(m.context.max(1));
    let mut runner = BatchRunner::new(&m.backend, &m.model, tokenizer, a.batch, context)?;
    let bar = progress_bar(chunks.len() as u64, "chunks");
    let mut results: Vec<ChunkResult> = Vec::new();
    let stats = futures::executor::block_on(synth::synthesize(&mut runner, &template, tokenizer, &settings, chunks, &mut |r, stats| {
        bar.inc(1);
        bar.set_message(rate(stats));
        results.push(r);
        Ok(())
    }))?;
    bar.finish_and_clear();

    let base = GenInputConfigs {
        temperature: a.temperature,
        top_p: a.top_p,
        response_temperature: a.temperature,
        response_top_p: a.top_p,
        seed: a.seed,
        model: model_name(&a.model.model),
        engine_version: engine::magpie::ENGINE_VERSION.to_string(),
        max_tokens: a.max_tokens as u32,
        ..GenInputConfigs::default()
    };
    let rows: Vec<_> = results.iter().flat_map(|r| dataset::synth::pairs_to_rows(r.index, &r.pairs, &base)).collect();
    std::fs::write(&a.out, export(&rows, Format::ShareGpt)).with_context(|| format!("writing {}", a.out.display()))?;
    let augmented_path = augmented_path(&a.out);
    let items: Vec<(String, Vec<_>)> = results.iter().map(|r| (r.chunk.clone(), r.pairs.clone())).collect();
    std::fs::write(&augmented_path, dataset::synth::augmented_jsonl(&items))
        .with_context(|| format!("writing {}", augmented_path.display()))?;
    let unparsed: usize = results.iter().map(|r| r.unparsed.len()).sum();
    eprintln!(
        "aviary: {} chunks → {} pairs ({} pieces of output could not be read as pairs); {}; augmented text in {}",
        results.len(),
        rows.len(),
        unparsed,
        rate(&stats),
        augmented_path.display()
    );
    for r in results.iter().filter(|r| !r.unparsed.is_empty()) {
        for u in &r.unparsed {
            eprintln!("aviary: chunk {} unparsed: {}", r.index, u.chars().take(200).collect::<String>());
        }
    }
    Ok(())
}

fn augmented_path(out: &std::path::Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "synth".into());
    out.with_file_name(format!("{stem}.augmented.jsonl"))
}
