//! `aviary bench-magpie`: Magpie throughput at several batch sizes on one backend. The same samples run at every
//! size (a row depends only on its index and the seed), so each size generates the same tokens and the rates
//! compare like with like.

use crate::load::{load, Loaded, ModelArgs};
use anyhow::Result;
use engine::backend::Backend;
use engine::batch::BatchRunner;
use engine::magpie::{self, MagpieContext, MagpieSettings, StepSettings};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, default_value = "1,4,8,16")]
    batches: String,
    /// Samples per measurement.
    #[arg(long, default_value_t = 16)]
    n: u64,
    #[arg(long, default_value_t = 32)]
    ins_max_tokens: usize,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object per batch size.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let batches = a
        .batches
        .split(',')
        .map(|b| b.trim().parse::<usize>().map_err(|_| anyhow::anyhow!("`{b}` is not a batch size")))
        .collect::<Result<Vec<_>>>()?;
    let loaded = load(&a.model)?;
    crate::on_backend!(loaded, m => run_on(&a, m, &batches))
}

fn run_on<B: Backend>(a: &Args, m: &Loaded<B>, batches: &[usize]) -> Result<()> {
    let tokenizer = m.tokenizer()?;
    let template = m.chat_template()?;
    let settings = MagpieSettings {
        seed: a.seed,
        pre_query_template: magpie::pre_query_template(&template, None)?,
        instruction: StepSettings { temperature: 1.0, top_p: 1.0, max_tokens: a.ins_max_tokens },
        response: StepSettings { temperature: 0.0, top_p: 1.0, max_tokens: a.max_tokens },
        stop_at_newline: true,
        model: crate::magpie::model_name(&a.model.model),
        ..MagpieSettings::default()
    };
    let pre_tokens = tokenizer.encode(&settings.pre_query_template, false)?.len();
    let context = settings.context_needed(pre_tokens).min(m.context.max(1));
    let ctx = MagpieContext { template: &template, tokenizer, settings };
    let samples: Vec<u64> = (0..a.n).collect();
    let mut base_rate = None;
    for &batch in batches {
        let mut runner = BatchRunner::new(&m.backend, &m.model, tokenizer, batch, context)?;
        let stats = futures::executor::block_on(magpie::generate(&mut runner, &ctx, &samples, &mut |_, _| Ok(())))?;
        let tok_s = stats.tokens_per_second();
        let decode_tok_s = stats.decode_tokens_per_second();
        let speedup = decode_tok_s / *base_rate.get_or_insert(decode_tok_s);
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "model": a.model.model.display().to_string(),
                    "backend": m.backend_name(),
                    "batch": batch,
                    "samples": stats.tasks_done,
                    "samples_per_min": stats.tasks_per_minute(),
                    "generated_tokens": stats.generated_tokens,
                    "tok_s": tok_s,
                    "decode_tok_s": decode_tok_s,
                    "decode_speedup_vs_first": speedup,
                    "seconds": stats.elapsed_ms / 1000.0,
                })
            );
        } else {
            println!(
                "B={batch:>3}: {:>6.1} samples/min, {:>7.1} tok/s overall, decode {:>7.1} tok/s ({:.2}× B={}), {} tokens in {:.1} s",
                stats.tasks_per_minute(),
                tok_s,
                decode_tok_s,
                speedup,
                batches[0],
                stats.generated_tokens,
                stats.elapsed_ms / 1000.0
            );
        }
    }
    Ok(())
}
