use crate::load::{load, AnyLoaded, Loaded, ModelArgs};
use engine::backend::Backend;
use anyhow::Result;
use engine::sampling::SamplingParams;
use engine::session::GenerateOptions;

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
    /// Also apply N synthetic LoRA adapters (random, rank 16, on all seven projections of every layer), besides any
    /// --lora files: the cost of adapters without needing adapter files.
    #[arg(long, default_value_t = 0)]
    synthetic_lora: usize,
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
    let loaded = load(&a.model)?;
    let load_s = t0.elapsed().as_secs_f64();
    match &loaded {
        AnyLoaded::Cpu(m) => run_on(&a, m, load_s, None),
        AnyLoaded::Gpu(m) => {
            let copy_gbs = futures::executor::block_on(m.backend.copy_bandwidth_gbs())?;
            let adapter = m.backend.adapter().clone();
            let f16 = m.backend.uses_f16();
            run_on(&a, m, load_s, Some(GpuExtras { copy_gbs, adapter, f16 }))?;
            if let Some(report) = m.backend.profile_report() {
                eprint!("{report}");
            }
            Ok(())
        }
    }
}

struct GpuExtras {
    copy_gbs: f64,
    adapter: engine::backend::gpu::AdapterSummary,
    f16: bool,
}

fn run_on<B: Backend>(a: &Args, m: &Loaded<B>, load_s: f64, gpu: Option<GpuExtras>) -> Result<()> {
    // A fixed, ordinary token stream: cycle through ids away from the special tokens at either end.
    let vocab = m.files.config.vocab_size as u32;
    let prompt: Vec<u32> = (0..a.prompt_tokens as u32).map(|i| 1000 % vocab + (i * 7919) % (vocab / 2)).collect();
    let mut session = m.session(None, 0)?;
    if a.synthetic_lora > 0 {
        let targets = engine::lora::Target::ALL;
        let mut active: Vec<(std::rc::Rc<engine::lora::Adapter<B>>, f32)> = m.lora.shared();
        for i in 0..a.synthetic_lora {
            let file = engine::lora::LoraFile::random(&m.model.config, 16, 16.0, &targets, i as u64 + 1);
            active.push((std::rc::Rc::new(engine::lora::Adapter::new(&m.backend, &m.model, &file, "synthetic")?), 1.0));
        }
        session.set_lora(engine::lora::LoraStack::new(active))?;
    }
    let adapters = m.lora.active().count() + a.synthetic_lora;
    let options = GenerateOptions {
        max_tokens: a.decode_tokens,
        sampling: SamplingParams::default(),
        stop_at_eos: false,
        ..Default::default()
    };
    let g = futures::executor::block_on(session.generate(&prompt, &options, &mut |_, _| {}))?;
    let s = &g.stats;
    let peak = peak_rss_mb();
    let steps = s.decode_steps().max(1) as f64;
    let c = s.decode_counters;
    let weight_bytes = m.files.weight_bytes_per_token() as f64;
    let gpu_fields = gpu.as_ref().map(|g| {
        serde_json::json!({
            "adapter": g.adapter,
            "f16": g.f16,
            "dispatches_per_token": c.dispatches as f64 / steps,
            "dispatches_per_layer": c.dispatches as f64 / steps / m.model.layers.len().max(1) as f64,
            "submits_per_token": c.submits as f64 / steps,
            "readback_bytes_per_token": c.readback_bytes as f64 / steps,
            "allocations_per_token": c.allocations as f64 / steps,
            "weight_bytes_per_token": weight_bytes,
            "copy_bandwidth_gbs": g.copy_gbs,
            "roofline_fraction": weight_bytes * s.decode_tok_s() / (g.copy_gbs * 1e9),
        })
    });
    if a.json {
        let mut obj = serde_json::json!({
            "model": a.model.model.display().to_string(),
            "backend": m.backend_name(),
            "load_s": load_s,
            "lora_adapters": adapters,
            "prompt_tokens": s.prompt_tokens,
            "decode_tokens": s.generated_tokens,
            "prefill_tok_s": s.prefill_tok_s(),
            "decode_tok_s": s.decode_tok_s(),
            "time_to_first_token_ms": s.time_to_first_token_ms,
            "peak_rss_mb": peak,
        });
        if let (Some(serde_json::Value::Object(extra)), Some(o)) = (gpu_fields, obj.as_object_mut()) {
            o.extend(extra);
        }
        println!("{obj}");
    } else {
        println!("model:    {}", a.model.model.display());
        println!("backend:  {}", m.backend_name());
        if adapters > 0 {
            println!("adapters: {adapters} LoRA");
        }
        println!("load:     {load_s:.2} s");
        println!("prefill:  {:.1} tok/s ({} tokens)", s.prefill_tok_s(), s.prompt_tokens);
        println!("decode:   {:.1} tok/s ({} tokens)", s.decode_tok_s(), s.generated_tokens);
        if let Some(p) = peak {
            println!("peak RSS: {p:.0} MiB");
        }
        if let Some(f) = gpu_fields {
            println!("gpu:      {f}");
        }
    }
    Ok(())
}
