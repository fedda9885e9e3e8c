use crate::load::{load, parse_tokens, Loaded, ModelArgs};
use engine::backend::Backend;
use anyhow::{bail, Result};
use engine::chat::Message;
use engine::sampling::SamplingParams;
use engine::session::GenerateOptions;
use std::io::Write;

#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// 1 = off.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// 1 = off.
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplingParams::default()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The user's message (put in the model's chat template unless --raw).
    #[arg(long, conflicts_with = "tokens")]
    prompt: Option<String>,
    /// Prompt token ids, comma-separated, run as they are.
    #[arg(long)]
    tokens: Option<String>,
    /// Tokenise --prompt as it is (special tokens recognised, BOS added when the model asks for it).
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object {"prompt_tokens", "tokens", "text"} instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let loaded = load(&a.model)?;
    crate::on_backend!(loaded, m => run_on(&a, m))
}

fn run_on<B: Backend>(a: &Args, m: &Loaded<B>) -> Result<()> {
    let prompt = match (&a.prompt, &a.tokens) {
        (Some(p), None) if a.raw => m.encode_prompt(&[], Some(p))?,
        (Some(p), None) => m.encode_prompt(&[Message { role: "user".into(), content: p.clone() }], None)?,
        (None, Some(t)) => parse_tokens(t)?,
        _ => bail!("give either --prompt or --tokens"),
    };
    let options = GenerateOptions { max_tokens: a.max_tokens, sampling: a.sampling.params(), ..Default::default() };
    let mut session = m.session(m.files.tokenizer.as_ref(), prompt.len() + 1)?;
    let stdout = std::io::stdout();
    let json = a.json;
    let g = futures::executor::block_on(session.generate(&prompt, &options, &mut |_, text| {
        if !json {
            let mut out = stdout.lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }))?;
    if json {
        let obj = serde_json::json!({ "prompt_tokens": prompt, "tokens": g.tokens, "text": g.text });
        println!("{obj}");
    } else {
        println!();
        let s = &g.stats;
        eprintln!(
            "[{} backend: {} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s, first token {:.0} ms; stop: {:?}]",
            m.backend_name(),
            s.prompt_tokens,
            s.generated_tokens,
            s.prefill_tok_s(),
            s.decode_tok_s(),
            s.time_to_first_token_ms,
            g.stop_reason
        );
    }
    Ok(())
}
