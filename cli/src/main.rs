//! `aviary`: run Aviary's engine from the command line.

mod bench;
mod chat;
mod generate;
mod load;
mod logits;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aviary", version, about = "Run small Llama, Gemma 2 and Gemma 3 models on Aviary's engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a reply to one prompt.
    Generate(generate::Args),
    /// Print the logits the model gives for a token sequence.
    Logits(logits::Args),
    /// Chat with a model interactively (streaming; /reset starts over, /quit or Ctrl-D leaves).
    Chat(chat::Args),
    /// Measure prefill and decode speed and peak memory.
    Bench(bench::Args),
    /// Serve the browser app (and a directory of models) over HTTP, with Range requests.
    Serve(serve::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate(a) => generate::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
    }
}
