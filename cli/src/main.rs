//! `aviary`: run Aviary's engine from the command line.

mod bench;
mod bench_magpie;
mod chat;
mod generate;
mod load;
mod logits;
mod magpie;
mod serve;
mod synth;
mod train;

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
    /// Make an instruction dataset with the Magpie method (ShareGPT JSONL).
    Magpie(magpie::Args),
    /// Turn raw text into instruction–response pairs (Instruction Pre-Training's synthesis).
    Synth(synth::Args),
    /// Fine-tune a LoRA adapter on instruction data (ch. 7 of Build a Large Language Model From Scratch).
    Train(train::Args),
    /// Measure Magpie throughput at several batch sizes.
    BenchMagpie(bench_magpie::Args),
    /// Serve the browser app (and a directory of models) over HTTP, with Range requests.
    Serve(serve::Args),
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    engine::backend::cpu::on_worker_thread(|| run(command))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Generate(a) => generate::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Magpie(a) => magpie::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Train(a) => train::run(a),
        Command::BenchMagpie(a) => bench_magpie::run(a),
    }
}
