use crate::load::{load, ModelArgs};
use anyhow::Result;
use engine::sampling::SamplingParams;
use engine::session::{GenerateOptions, Session};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens to decode.
    #[arg(long, default_value_t = 128)]
    decode_tokens: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Peak resident memory of this process in MiB (Linux), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(mut a: Args) -> Result<()> {
    let needed = a.prompt_tokens + a.decode_tokens + 1;
    a.model.context = Some(a.model.context.unwrap_or(needed).max(needed));
    let t0 = std::time::Instant::now();
    let m = load(&a.model)?;
    let load_s = t0.elapsed().as_secs_f64();
    // A fixed, ordinary token stream: cycle through ids away from the special tokens at either end.
    let vocab = m.files.config.vocab_size as u32;
    let prompt: Vec<u32> = (0..a.prompt_tokens as u32).map(|i| 1000 % vocab + (i * 7919) % (vocab / 2)).collect();
    let mut session = Session::new(&m.backend, &m.model, None, m.context)?;
    let options = GenerateOptions {
        max_tokens: a.decode_tokens,
        sampling: SamplingParams::default(),
        stop_at_eos: false,
        ..Default::default()
    };
    let g = futures::executor::block_on(session.generate(&prompt, &options, &mut |_, _| {}))?;
    let s = &g.stats;
    let peak = peak_rss_mb();
    if a.json {
        let obj = serde_json::json!({
            "model": a.model.model.display().to_string(),
            "backend": m.backend_name(),
            "load_s": load_s,
            "prompt_tokens": s.prompt_tokens,
            "decode_tokens": s.generated_tokens,
            "prefill_tok_s": s.prefill_tok_s(),
            "decode_tok_s": s.decode_tok_s(),
            "time_to_first_token_ms": s.time_to_first_token_ms,
            "peak_rss_mb": peak,
        });
        println!("{obj}");
    } else {
        println!("model:    {}", a.model.model.display());
        println!("backend:  {}", m.backend_name());
        println!("load:     {load_s:.2} s");
        println!("prefill:  {:.1} tok/s ({} tokens)", s.prefill_tok_s(), s.prompt_tokens);
        println!("decode:   {:.1} tok/s ({} tokens)", s.decode_tok_s(), s.generated_tokens);
        if let Some(p) = peak {
            println!("peak RSS: {p:.0} MiB");
        }
    }
    Ok(())
}
