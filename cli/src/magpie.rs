//! `aviary magpie`: Magpie instruction data from nothing, B samples at a time, written as ShareGPT JSONL — the same
//! rows as the browser's export. `--shard I/N` makes the I-th of N disjoint slices that concatenate to the whole run.

use crate::load::{load, Loaded, ModelArgs};
use anyhow::{bail, Context, Result};
use dataset::formats::{export_line, Format};
use dataset::Row;
use engine::backend::Backend;
use engine::batch::{BatchRunner, BatchStats};
use engine::magpie::{self, MagpieContext, MagpieSettings, StepSettings, SystemPreset};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Rows to make (before sharding).
    #[arg(long, default_value_t = 100)]
    pub n: u64,
    /// Where to write the rows (ShareGPT JSONL).
    #[arg(long, required_unless_present = "show_template")]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples decoded together in one forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Instruction–response rounds per row.
    #[arg(long, default_value_t = 1)]
    pub turns: u32,
    /// A system prompt before the pre-query template (steers the domain).
    #[arg(long, conflicts_with = "preset")]
    pub system: Option<String>,
    /// A built-in system prompt: math, code, translation or writing.
    #[arg(long)]
    pub preset: Option<String>,
    /// Use this pre-query template instead of the one derived from the chat template.
    #[arg(long)]
    pub pre_query: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub ins_temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub ins_top_p: f32,
    #[arg(long, default_value_t = 128)]
    pub ins_max_tokens: usize,
    /// Response temperature (0 = greedy, the Magpie default).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Longest response, in tokens.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Keep only the first line of each instruction.
    #[arg(long)]
    pub stop_at_newline: bool,
    /// Strip "Task:"-like labels from instructions and cut them at "Answer:".
    #[arg(long)]
    pub sanitize: bool,
    /// Tag every row with the model as judge (difficulty, input quality, task category).
    #[arg(long)]
    pub judge: bool,
    /// Drop rows with a filter preset: none, basic, air or pro (counts per filter on stderr).
    #[arg(long)]
    pub filter: Option<String>,
    /// I/N: make only the I-th of N disjoint slices (0-based), for parallel copies under a scheduler.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print {"pre_query_template": …} as JSON and exit.
    #[arg(long)]
    pub show_template: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (shard, shards) = parse_shard(a.shard.as_deref())?;
    let system = match (&a.system, &a.preset) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(p)) => Some(
            SystemPreset::from_name(p)
                .with_context(|| format!("unknown preset `{p}`: math, code, translation or writing"))?
                .text()
                .to_string(),
        ),
        (None, None) => None,
    };
    let filter = a
        .filter
        .as_deref()
        .map(|f| f.parse::<dataset::filters::Preset>().map_err(|e| anyhow::anyhow!("--filter {f}: {e}")))
        .transpose()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    // Open the output first: a file that cannot be written fails before any work.
    let out = match (&a.out, a.show_template) {
        (Some(path), false) => Some(
            std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
        ),
        _ => None,
    };
    let samples: Vec<u64> = magpie::shard_indices(a.n, shard, shards)?.collect();
    let loaded = load(&a.model)?;
    crate::on_backend!(loaded, m => run_on(&a, m, system, filter, samples, out))
}

fn parse_shard(s: Option<&str>) -> Result<(u64, u64)> {
    let Some(s) = s else { return Ok((0, 1)) };
    let (i, n) = s.split_once('/').with_context(|| format!("--shard {s}: expected I/N, e.g. 0/4"))?;
    let i: u64 = i.trim().parse().with_context(|| format!("--shard {s}: `{i}` is not a number"))?;
    let n: u64 = n.trim().parse().with_context(|| format!("--shard {s}: `{n}` is not a number"))?;
    if n == 0 || i >= n {
        bail!("--shard {s}: I must be below N (0/{n} … {}/{n})", n.saturating_sub(1));
    }
    Ok((i, n))
}

fn run_on<B: Backend>(
    a: &Args,
    m: &Loaded<B>,
    system: Option<String>,
    filter: Option<dataset::filters::Preset>,
    samples: Vec<u64>,
    out: Option<std::fs::File>,
) -> Result<()> {
    let tokenizer = m.tokenizer()?;
    let template = m.chat_template()?;
    if m.files.chat_template.is_none() {
        eprintln!(
            "aviary: this model has no chat template; the built-in {:?} template stands in. A base model that was \
             never aligned makes poor Magpie data.",
            engine::prompt::builtin_for(m.files.config.arch, tokenizer)
        );
    }
    let pre_query = match &a.pre_query {
        Some(p) => p.clone(),
        None => magpie::pre_query_template(&template, system.as_deref())?,
    };
    if a.show_template {
        println!("{}", serde_json::json!({ "pre_query_template": pre_query }));
        return Ok(());
    }
    let settings = MagpieSettings {
        seed: a.seed,
        turns: a.turns,
        pre_query_template: pre_query,
        system_prompt: system,
        instruction: StepSettings { temperature: a.ins_temperature, top_p: a.ins_top_p, max_tokens: a.ins_max_tokens },
        response: StepSettings { temperature: a.temperature, top_p: a.top_p, max_tokens: a.max_tokens },
        stop_at_newline: a.stop_at_newline,
        sanitize: a.sanitize,
        model: model_name(&a.model.model),
    };
    settings.validate()?;
    let pre_tokens = tokenizer.encode(&settings.pre_query_template, false)?.len();
    let context = settings.context_needed(pre_tokens).min(m.context.max(1));
    let ctx = MagpieContext { template: &template, tokenizer, settings };
    let mut runner = BatchRunner::new(&m.backend, &m.model, tokenizer, a.batch, context)?;

    let bar = progress_bar(samples.len() as u64, "rows");
    // Rows go to the file as they come (nothing made is lost to a later failure) unless judging or filtering
    // needs them all first.
    let stream = !a.judge && filter.is_none();
    let mut writer = out.map(BufWriter::new);
    let mut rows: Vec<Row> = Vec::new();
    let stats = futures::executor::block_on(magpie::generate(&mut runner, &ctx, &samples, &mut |row, stats| {
        bar.inc(1);
        bar.set_message(rate(stats));
        if let (true, Some(w)) = (stream, writer.as_mut()) {
            writeln!(w, "{}", export_line(&row, Format::ShareGpt))
                .map_err(|e| engine::Error::Backend(format!("writing the output: {e}")))?;
        }
        rows.push(row);
        Ok(())
    }))?;
    bar.finish_and_clear();
    eprintln!("aviary: {} rows; {}", rows.len(), rate(&stats));

    if a.judge {
        let mut judge_runner = BatchRunner::new(&m.backend, &m.model, tokenizer, a.batch, m.context.clamp(1, magpie::JUDGE_CONTEXT))?;
        let bar = progress_bar(rows.len() as u64, "judged");
        let result = futures::executor::block_on(magpie::judge(&mut judge_runner, &template, tokenizer, &mut rows, &mut |_, _, _| {
            bar.inc(1);
            Ok(())
        }));
        bar.finish_and_clear();
        if let Err(e) = result {
            eprintln!("aviary: judging failed ({e}); the rows are written without tags");
        }
        let tagged = rows.iter().filter(|r| r.tags != dataset::Tags::default()).count();
        eprintln!("aviary: {tagged} of {} rows tagged", rows.len());
    }
    if let Some(preset) = filter {
        let report = dataset::filters::apply(&rows, &preset.settings());
        for (name, count) in &report.removed {
            eprintln!("aviary: filter {name}: {count} removed");
        }
        rows = report.kept.iter().map(|&i| rows[i].clone()).collect();
        eprintln!("aviary: {} rows kept", rows.len());
    }
    if let Some(mut w) = writer {
        if !stream {
            for row in &rows {
                writeln!(w, "{}", export_line(row, Format::ShareGpt))?;
            }
        }
        w.flush().context("writing the output")?;
    }
    Ok(())
}

/// The model's file (or folder) name, as rows record it.
pub fn model_name(path: &std::path::Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

pub fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(&format!(
        "{{bar:30}} {{pos}}/{{len}} {what} · {{msg}} · {{elapsed}} elapsed, {{eta}} left"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub fn rate(stats: &BatchStats) -> String {
    format!("{:.1} rows/min, {:.1} tok/s", stats.tasks_per_minute(), stats.tokens_per_second())
}
