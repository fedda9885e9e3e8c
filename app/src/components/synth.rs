//! Instruction synthesis (Instruction Pre-Training): raw text, pasted or from a file, is cut into chunks and the
//! loaded model writes question–answer pairs about each. Every chunk shows its pairs and, visibly, whatever output
//! could not be read as pairs. Exports: the pairs as instruction rows (ShareGPT, OpenAI, Alpaca) and the text
//! augmented with its pairs (JSONL of {"text"}).

use crate::bridge::runs;
use crate::bridge::Bridge;
use crate::files;
use crate::format;
use crate::state::{DatasetState, ModelState, RunStatus, Status};
use dataset::{Format, GenInputConfigs};
use engine::synth::{ChunkResult, SynthSettings};
use crate::components::number_field::NumberField;
use leptos::prelude::*;

/// What exported pair rows record about how they were made.
fn configs(settings: &SynthSettings, model: &str) -> GenInputConfigs {
    GenInputConfigs {
        temperature: settings.temperature,
        top_p: settings.top_p,
        response_temperature: settings.temperature,
        response_top_p: settings.top_p,
        seed: settings.seed,
        turns: 1,
        model: model.to_string(),
        engine_version: engine::magpie::ENGINE_VERSION.to_string(),
        max_tokens: settings.max_tokens as u32,
        ..GenInputConfigs::default()
    }
}

#[component]
pub fn SynthView() -> impl IntoView {
    let ds = expect_context::<DatasetState>();
    let synth = ds.synth;
    let model = expect_context::<ModelState>();
    let bridge = expect_context::<Bridge>();
    let message = RwSignal::new(None::<String>);
    let dragging = RwSignal::new(false);
    let running = move || synth.status.with(|s| s.running_id().is_some());
    let can_start = move || model.status.get() == Status::Ready && !ds.busy();
    let read_into_text = move |list: Vec<web_sys::File>| {
        if let Some(file) = list.into_iter().next() {
            leptos::task::spawn_local(async move {
                match files::read_text(&file).await {
                    Ok(text) => {
                        message.set(Some(format!("{}: {} characters", file.name(), text.chars().count())));
                        synth.text.set(text);
                    }
                    Err(e) => message.set(Some(e)),
                }
            });
        }
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        read_into_text(files::file_list(ev.data_transfer().and_then(|d| d.files())));
    };
    let on_dragover = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(true);
    };
    let status = move || match synth.status.get() {
        RunStatus::Idle if synth.results.with(|r| !r.is_empty()) => "done".to_string(),
        RunStatus::Idle => String::new(),
        RunStatus::Running { .. } => "running".to_string(),
        RunStatus::Paused => "stopped".to_string(),
        RunStatus::Failed(e) => format!("failed: {e}"),
    };
    let progress = move || {
        let done = synth.results.with(|r| r.len());
        let total = synth.total.get();
        let rate = synth.stats.get().map(|s| format!(" · {:.1} tokens/s", s.tokens_per_second())).unwrap_or_default();
        let pairs: usize = synth.results.with(|r| r.iter().map(|c| c.pairs.len()).sum());
        (total > 0 || running()).then(|| {
            view! {
                <progress max=total.max(1).to_string() value=done.to_string()></progress>
                <p class="muted" data-testid="synth-progress">{format!("{done} / {total} chunks · {pairs} pairs{rate}")}</p>
            }
        })
    };
    let pair_rows = move || {
        let name = runs::model_name(model).unwrap_or_default();
        let base = synth.settings.with_untracked(|s| configs(s, &name));
        synth.results.with_untracked(|results| {
            results.iter().flat_map(|c| dataset::pairs_to_rows(c.index, &c.pairs, &base)).collect::<Vec<dataset::Row>>()
        })
    };
    // Into the dataset the Magpie view shows, which is kept in IndexedDB (synthesis results alone live in memory).
    let add_to_dataset = move |_| {
        let rows = pair_rows();
        let count = rows.len();
        let added = rows.into_iter().filter(|row| ds.put_row(row.clone())).count();
        message.set(Some(format!("added {added} of {count} pairs to the dataset (the Magpie view shows it)")));
    };
    let export_pairs = move |format: Format| {
        let rows = pair_rows();
        let file = format!("synth-{}{}", files::today(), format.file_suffix());
        message.set(Some(match files::download(&file, &dataset::export(&rows, format), "application/jsonl") {
            Ok(()) => format!("exported {} pairs as {file}", rows.len()),
            Err(e) => format!("export failed: {e}"),
        }));
    };
    let export_text = move |_| {
        let items: Vec<(String, Vec<dataset::QaPair>)> =
            synth.results.with_untracked(|results| results.iter().map(|c| (c.chunk.clone(), c.pairs.clone())).collect());
        let file = format!("synth-{}.augmented.jsonl", files::today());
        message.set(Some(match files::download(&file, &dataset::augmented_jsonl(&items), "application/jsonl") {
            Ok(()) => format!("exported {} augmented chunks as {file}", items.len()),
            Err(e) => format!("export failed: {e}"),
        }));
    };
    let has_results = move || synth.results.with(|r| !r.is_empty());

    view! {
        <section class="panel synth" class:dragging=move || dragging.get() data-testid="synth-panel"
            on:dragover=on_dragover on:dragleave=move |_| dragging.set(false) on:drop=on_drop>
            <h2>"Instruction synthesis"</h2>
            <p class="muted">"The loaded model writes question–answer pairs about each chunk of a raw text."</p>
            <label for="synth-input">"Raw text"</label>
            <textarea id="synth-input" rows="8" data-testid="synth-input" bind:value=synth.text
                placeholder="Paste text here, pick a file, or drop one on this panel."></textarea>
            <div class="local">
                <label class="file-button">
                    "Open a text file…"
                    <input type="file" accept=".txt,.md,text/*" data-testid="synth-file"
                        on:change=move |ev| read_into_text(files::take_input_files(&ev))/>
                </label>
                <span class="muted">{move || format!("{} characters", synth.text.with(|t| t.chars().count()))}</span>
            </div>
            <div class="settings-grid">
                <NumberField settings=synth.settings label="Chunk size (tokens)" testid="synth-chunk-tokens" step="16"
                    get={|s| s.chunk_tokens} set={|s, v| s.chunk_tokens = v} ok={|v: &usize| *v >= 16}/>
                <NumberField settings=synth.settings label="Pairs per chunk" testid="synth-pairs" step="1"
                    get={|s| s.pairs} set={|s, v| s.pairs = v} ok={|v: &usize| (1..=32).contains(v)}/>
                <NumberField settings=synth.settings label="Max tokens per chunk" testid="synth-max-tokens" step="1"
                    get={|s| s.max_tokens} set={|s, v| s.max_tokens = v} ok={|v: &usize| *v >= 1}/>
                <NumberField settings=synth.settings label="Temperature (0 = greedy)" testid="synth-temperature" step="0.05"
                    get={|s| s.temperature} set={|s, v| s.temperature = v} ok={|v: &f32| v.is_finite() && (0.0..=5.0).contains(v)}/>
                <NumberField settings=synth.settings label="Seed" testid="synth-seed" step="1"
                    get={|s| s.seed} set={|s, v| s.seed = v} ok={|_: &u64| true}/>
            </div>
            <div class="row controls">
                <Show when=running fallback=move || view! {
                    <button data-testid="synth-start" on:click=move |_| runs::start_synth(bridge) disabled=move || !can_start()>"Start"</button>
                }>
                    <button class="stop" data-testid="synth-stop" on:click=move |_| runs::stop_synth(bridge)>"Stop"</button>
                </Show>
            </div>
            <div class="progress">
                <p class="muted" class:error=move || synth.status.with(|s| matches!(s, RunStatus::Failed(_)))
                    data-testid="synth-status">{status}</p>
                {progress}
            </div>
            <div class="row dataset-actions">
                <button data-testid="synth-add" on:click=add_to_dataset
                    disabled=move || !has_results()>"Add pairs to the dataset"</button>
                <button class="secondary" data-testid="synth-export" on:click=move |_| export_pairs(Format::ShareGpt)
                    disabled=move || !has_results()>"Export pairs (ShareGPT)"</button>
                <button class="secondary" data-testid="synth-export-openai" on:click=move |_| export_pairs(Format::OpenAi)
                    disabled=move || !has_results()>"OpenAI"</button>
                <button class="secondary" data-testid="synth-export-alpaca" on:click=move |_| export_pairs(Format::Alpaca)
                    disabled=move || !has_results()>"Alpaca"</button>
                <button class="secondary" data-testid="synth-export-text" on:click=export_text
                    disabled=move || !has_results()>"Export augmented text"</button>
            </div>
            {move || message.get().map(|m| view! { <p class="muted" data-testid="synth-message">{m}</p> })}
            <ol class="chunks">
                <For each=move || synth.results.get() key=|c| c.index let:chunk>
                    <ChunkView chunk=chunk/>
                </For>
            </ol>
        </section>
    }
}

#[component]
fn ChunkView(chunk: ChunkResult) -> impl IntoView {
    let pairs = chunk
        .pairs
        .iter()
        .map(|p| {
            view! {
                <li class="pair" data-testid="synth-pair">
                    <p class="question"><strong>"Q: "</strong>{p.question.clone()}</p>
                    <p class="answer"><strong>"A: "</strong>{p.answer.clone()}</p>
                </li>
            }
        })
        .collect_view();
    let unparsed = chunk
        .unparsed
        .iter()
        .map(|u| view! { <pre class="unparsed" data-testid="synth-unparsed">{u.clone()}</pre> })
        .collect_view();
    let head = format!(
        "Chunk {} · {} pair(s){}",
        chunk.index + 1,
        chunk.pairs.len(),
        if chunk.unparsed.is_empty() { String::new() } else { format!(" · {} piece(s) not understood", chunk.unparsed.len()) }
    );
    let has_unparsed = !chunk.unparsed.is_empty();
    view! {
        <li class="chunk" data-testid="synth-row" data-index=chunk.index.to_string()
            data-pairs=chunk.pairs.len().to_string() data-unparsed=chunk.unparsed.len().to_string()>
            <p class="chunk-head">{head}</p>
            <details>
                <summary>{format!("the chunk ({})", format::bytes(chunk.chunk.len() as u64))}</summary>
                <div class="chunk-text">{chunk.chunk.clone()}</div>
            </details>
            <ol class="pairs">{pairs}</ol>
            {has_unparsed.then(|| view! {
                <div class="unparsed-box">
                    <p class="error">"Output that could not be read as question–answer pairs:"</p>
                    {unparsed}
                </div>
            })}
        </li>
    }
}
