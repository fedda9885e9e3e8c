use crate::generate::SamplingArgs;
use crate::load::{load, Loaded, ModelArgs};
use engine::backend::Backend;
use anyhow::Result;
use engine::chat::Message;
use engine::session::{GenerateOptions, StopReason};
use std::io::{BufRead, Write};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A system prompt for the conversation.
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
}

pub fn run(a: Args) -> Result<()> {
    let loaded = load(&a.model)?;
    crate::on_backend!(loaded, m => run_on(&a, m))
}

fn run_on<B: Backend>(a: &Args, m: &Loaded<B>) -> Result<()> {
    let template = m.chat_template()?;
    let mut session = m.session(m.files.tokenizer.as_ref(), 0)?;
    let options = GenerateOptions { max_tokens: a.max_tokens, sampling: a.sampling.params(), ..Default::default() };
    let start = || -> Vec<Message> {
        a.system.iter().map(|s| Message { role: "system".into(), content: s.clone() }).collect()
    };
    let mut messages = start();
    eprintln!(
        "aviary chat — {} on the {} backend. Type a message; /reset starts over; /quit or Ctrl-D leaves.",
        a.model.model.display(),
        m.backend_name()
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next() else { break };
        let line = line?;
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                messages = start();
                session.reset()?;
                eprintln!("(new conversation)");
                continue;
            }
            _ => {}
        }
        messages.push(Message { role: "user".into(), content: line });
        let prompt = m.tokenizer()?.encode(&template.render(&messages, true)?, false)?;
        let mut out = std::io::stdout();
        let g = futures::executor::block_on(session.generate(&prompt, &options, &mut |_, text| {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }));
        match g {
            Ok(g) => {
                println!();
                let s = &g.stats;
                eprintln!(
                    "[{} tokens, {:.1} tok/s, first token {:.0} ms{}]",
                    s.generated_tokens,
                    s.decode_tok_s(),
                    s.time_to_first_token_ms,
                    if g.stop_reason == StopReason::ContextFull { "; context full, /reset to continue" } else { "" }
                );
                messages.push(Message { role: "assistant".into(), content: g.text });
            }
            Err(e) => {
                // Keep the conversation: the user can /reset or try again.
                messages.pop();
                eprintln!("error: {e}");
            }
        }
    }
    Ok(())
}
