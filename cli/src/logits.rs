use crate::load::{load, parse_tokens, Loaded, ModelArgs};
use engine::backend::Backend;
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma-separated.
    #[arg(long)]
    tokens: String,
    /// Print only the K highest logits per position, as [id, logit] pairs, highest first.
    #[arg(long)]
    top: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let loaded = load(&a.model)?;
    crate::on_backend!(loaded, m => run_on(&a, m))
}

fn run_on<B: Backend>(a: &Args, m: &Loaded<B>) -> Result<()> {
    let tokens = parse_tokens(&a.tokens)?;
    anyhow::ensure!(!tokens.is_empty(), "--tokens needs at least one id");
    let mut session = m.session(None, tokens.len())?;
    let logits = futures::executor::block_on(session.logits(&tokens))?;
    let out = match a.top {
        None => serde_json::json!({ "logits": logits }),
        Some(k) => {
            let top: Vec<Vec<(u32, f32)>> = logits
                .iter()
                .map(|row| {
                    let mut idx: Vec<(u32, f32)> = row.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
                    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    idx.truncate(k);
                    idx
                })
                .collect();
            serde_json::json!({ "top": top })
        }
    };
    println!("{out}");
    Ok(())
}
