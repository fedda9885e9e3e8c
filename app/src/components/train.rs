//! The Train view: fine-tune a LoRA adapter on the loaded model from the Magpie dataset (or imported JSONL) — the
//! prompt style, masking, rank, alpha, targets, learning rate, epochs, batch, maximum length, seed; Start, Pause,
//! Resume and Cancel; the losses as they fall, tokens/s and time left; checkpoints kept in the browser's storage and
//! offered after a reload. The adapter appears in the Adapters panel when the run ends, and exports as a PEFT zip or
//! a GGUF.

use crate::bridge::{train, Bridge};
use crate::components::loss_plot::LossPlot;
use crate::components::number_field::NumberField;
use crate::files::{read_text, take_input_files};
use crate::format;
use crate::state::{DatasetState, ModelState, PendingImport, Status, TrainState, TrainStatus};
use engine::lora::Target;
use engine::protocol::AdapterFormat;
use engine::train::data::{records_from_rows, PromptStyle, Record};
use engine::train::job::TrainJob;
use leptos::prelude::*;

/// The largest JSONL file the view imports (it is read whole into memory).
const MAX_IMPORT_BYTES: u64 = 64 << 20;

/// The Magpie dataset's rows as training records (rows without both halves are left out).
fn dataset_records(ds: DatasetState) -> Vec<Record> {
    ds.rows.with_untracked(|rows| records_from_rows(rows))
}

fn style_value(s: PromptStyle) -> &'static str {
    match s {
        PromptStyle::Chat => "chat",
        PromptStyle::Alpaca => "alpaca",
        PromptStyle::Phi3 => "phi3",
    }
}

#[component]
fn TrainForm() -> impl IntoView {
    let t = expect_context::<TrainState>();
    let ds = expect_context::<DatasetState>();
    let source = move || if t.use_imported.get() { "imported" } else { "magpie" };
    let import = move |ev: leptos::ev::Event| {
        let Some(file) = take_input_files(&ev).into_iter().next() else { return };
        t.pending_import.set(None);
        if file.size() > MAX_IMPORT_BYTES as f64 {
            t.notice.set(Some(format!(
                "{} is {}; a training set is read whole, so files above {} are refused",
                file.name(),
                format::bytes(file.size() as u64),
                format::bytes(MAX_IMPORT_BYTES)
            )));
            return;
        }
        leptos::task::spawn_local(async move {
            match read_text(&file).await {
                Ok(text) => {
                    let imported = dataset::formats::import(&text);
                    let records = records_from_rows(&imported.rows);
                    if records.is_empty() {
                        let why = imported.errors.first().map(|e| format!(" (line {}: {})", e.line, e.message));
                        t.notice.set(Some(format!(
                            "{} has no instruction with a reply to train on{}",
                            file.name(),
                            why.unwrap_or_default()
                        )));
                        return;
                    }
                    if imported.errors.is_empty() {
                        t.notice.set(None);
                        t.imported.set(Some((file.name(), records)));
                        t.use_imported.set(true);
                        return;
                    }
                    // Some lines are bad: the user says whether to train on the rest.
                    let first_bad =
                        imported.errors.iter().take(5).map(|e| format!("line {}: {}", e.line, e.message)).collect();
                    t.pending_import.set(Some(PendingImport {
                        file: file.name(),
                        records,
                        bad_lines: imported.errors.len(),
                        first_bad,
                    }));
                }
                Err(e) => t.notice.set(Some(e)),
            }
        });
    };
    let skip_bad = move |_| {
        if let Some(p) = t.pending_import.get_untracked() {
            t.notice.set(Some(format!("{}: {} bad line(s) skipped", p.file, p.bad_lines)));
            t.imported.set(Some((p.file, p.records)));
            t.use_imported.set(true);
        }
        t.pending_import.set(None);
    };
    let drop_file = move |_| t.pending_import.set(None);
    let pending = move || {
        t.pending_import.get().map(|p| {
            view! {
                <div class="notice" role="alert" data-testid="train-import-bad">
                    <p>{format!("{} line(s) of {} cannot be read ({} good rows):", p.bad_lines, p.file, p.records.len())}</p>
                    <ul>{p.first_bad.into_iter().map(|l| view! { <li>{l}</li> }).collect_view()}</ul>
                    <button data-testid="train-import-skip" on:click=skip_bad>"Skip them and use the rest"</button>
                    <button data-testid="train-import-stop" on:click=drop_file>"Don't use this file"</button>
                </div>
            }
        })
    };
    let magpie_rows = move || ds.rows.with(|r| r.len());
    let target_box = move |target: Target| {
        let name = target.hf_name().trim_end_matches("_proj");
        view! {
            <label class="check">
                <input type="checkbox" data-testid=format!("train-target-{name}")
                    prop:checked=move || t.form.with(|f| f.settings.targets.contains(&target))
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        t.form.update(|f| {
                            f.settings.targets.retain(|x| *x != target);
                            if on {
                                f.settings.targets.push(target);
                                f.settings.targets.sort();
                            }
                        })
                    }/>
                {name}
            </label>
        }
    };
    view! {
        <div class="train-form settings-grid">
            <label for="train-dataset">"Data"</label>
            <select id="train-dataset" data-testid="train-dataset" prop:value=source
                on:change=move |ev| t.use_imported.set(event_target_value(&ev) == "imported")>
                <option value="magpie">{move || format!("Magpie dataset ({} rows)", magpie_rows())}</option>
                <option value="imported" disabled=move || t.imported.with(|i| i.is_none())>
                    {move || t.imported.with(|i| match i {
                        Some((name, rows)) => format!("{name} ({} rows)", rows.len()),
                        None => "Imported JSONL (none yet)".to_string(),
                    })}
                </option>
            </select>
            <label class="file-button">"Import JSONL…"
                <input type="file" accept=".jsonl,.json,application/json" data-testid="train-import" on:change=import/>
            </label>
            {pending}
            <label for="train-name">"Adapter name"</label>
            <input id="train-name" type="text" data-testid="train-name" prop:value=move || t.form.with(|f| f.name.clone())
                on:change=move |ev| {
                    let v = event_target_value(&ev);
                    if !v.trim().is_empty() {
                        t.form.update(|f| f.name = v.trim().to_string());
                    }
                }/>
            <label for="train-style">"Prompt style"</label>
            <select id="train-style" data-testid="train-style" prop:value=move || t.form.with(|f| style_value(f.style))
                on:change=move |ev| {
                    if let Ok(s) = event_target_value(&ev).parse::<PromptStyle>() {
                        t.form.update(|f| f.style = s);
                    }
                }>
                <option value="chat">"The model's chat template"</option>
                <option value="alpaca">"Alpaca (ch. 7)"</option>
                <option value="phi3">"Phi-3"</option>
            </select>
            <label class="check">
                <input type="checkbox" data-testid="train-mask" prop:checked=move || t.form.with(|f| f.mask_instructions)
                    on:change=move |ev| t.form.update(|f| f.mask_instructions = event_target_checked(&ev))/>
                "Learn the responses only (mask the instructions)"
            </label>
            <NumberField settings=t.form label="Rank" testid="train-rank" step="1"
                get={|f: &TrainJob| f.settings.rank} set={|f, v| f.settings.rank = v} ok={|v| (1..=256).contains(v)}/>
            <NumberField settings=t.form label="Alpha" testid="train-alpha" step="1"
                get={|f: &TrainJob| f.settings.alpha} set={|f, v| f.settings.alpha = v} ok={|v: &f32| v.is_finite() && *v > 0.0}/>
            <NumberField settings=t.form label="Learning rate" testid="train-lr" step="0.0001"
                get={|f: &TrainJob| f.settings.optimizer.lr} set={|f, v| f.settings.optimizer.lr = v}
                ok={|v: &f32| *v > 0.0 && *v < 1.0}/>
            <NumberField settings=t.form label="Epochs" testid="train-epochs" step="1"
                get={|f: &TrainJob| f.settings.epochs} set={|f, v| f.settings.epochs = v} ok={|v| (1..=100).contains(v)}/>
            <NumberField settings=t.form label="Batch" testid="train-batch" step="1"
                get={|f: &TrainJob| f.settings.batch} set={|f, v| f.settings.batch = v} ok={|v| (1..=64).contains(v)}/>
            <NumberField settings=t.form label="Max length (tokens)" testid="train-max-len" step="16"
                get={|f: &TrainJob| f.max_len} set={|f, v| f.max_len = v} ok={|v| (8..=8192).contains(v)}/>
            <NumberField settings=t.form label="Seed" testid="train-seed" step="1"
                get={|f: &TrainJob| f.settings.seed} set={|f, v| f.settings.seed = v} ok={|_| true}/>
            <NumberField settings=t.form label="Validation share" testid="train-val" step="0.05"
                get={|f: &TrainJob| f.settings.val_fraction} set={|f, v| f.settings.val_fraction = v}
                ok={|v: &f32| (0.0..0.9).contains(v)}/>
            <NumberField settings=t.form label="Checkpoint every (steps)" testid="train-checkpoint-every" step="1"
                get={|f: &TrainJob| f.checkpoint_every} set={|f, v| f.checkpoint_every = v} ok={|v| *v >= 1}/>
            <fieldset class="targets">
                <legend>"Adapt"</legend>
                {Target::ALL.into_iter().map(target_box).collect_view()}
            </fieldset>
        </div>
    }
}

#[component]
pub fn TrainView() -> impl IntoView {
    let t = expect_context::<TrainState>();
    let ds = expect_context::<DatasetState>();
    let model = expect_context::<ModelState>();
    let bridge = expect_context::<Bridge>();
    let running = move || t.status.with(|s| s.id().is_some());
    let ready = move || matches!(model.status.get(), Status::Ready);
    let start = move |_| {
        let records = match t.use_imported.get_untracked() {
            true => t.imported.with_untracked(|i| i.as_ref().map(|(_, r)| r.clone()).unwrap_or_default()),
            false => dataset_records(ds),
        };
        if records.is_empty() {
            t.notice.set(Some("there are no rows to train on: make some in the Magpie view, or import JSONL".into()));
            return;
        }
        train::start(bridge, t, records);
    };
    let status_line = move || {
        let step = t.step.get();
        let total = t.run.with(|r| r.as_ref().map_or(0, |r| r.total_steps));
        let loss = t.losses.with(|l| l.last().map(|p| p.1));
        let val = t.val_losses.with(|l| l.last().map(|p| p.1));
        let mut parts = vec![format!("step {step} of {total}")];
        if let Some(l) = loss {
            parts.push(format!("loss {l:.3}"));
        }
        if let Some(v) = val {
            parts.push(format!("validation {v:.3}"));
        }
        if let Some((rate, left)) = t.speed.get() {
            parts.push(format!("{rate:.0} tokens/s"));
            if running() {
                parts.push(format!("{} left", format::duration(left)));
            }
        }
        let state = match t.status.get() {
            TrainStatus::Idle => "",
            TrainStatus::Running { .. } => "training",
            TrainStatus::Pausing { .. } => "pausing after this step…",
            TrainStatus::Cancelling { .. } => "cancelling…",
            TrainStatus::Paused => "paused (checkpoint kept)",
            TrainStatus::Done => "done",
            TrainStatus::Failed(_) => "stopped",
        };
        format!("{state} · {}", parts.join(" · "))
    };
    let failure = move || match t.status.get() {
        TrainStatus::Failed(e) => Some(view! { <p class="error" data-testid="train-error" role="alert">{e}</p> }),
        _ => None,
    };
    let paused_name = move || t.run.with(|r| r.as_ref().map(|r| r.name.clone()));
    view! {
        <section class="panel train" aria-label="Train a LoRA adapter">
            <h2>"Fine-tune a LoRA adapter"</h2>
            <p class="muted">"On the loaded model, which stays frozen in its file's quantization; the adapter learns \
                from instruction–response pairs (chapter 7 of Build a Large Language Model From Scratch)."</p>
            <TrainForm/>
            <div class="row controls">
                <button data-testid="train-start" on:click=start disabled=move || running() || !ready()>"Start"</button>
                <button class="secondary" data-testid="train-pause" on:click=move |_| train::pause(bridge, t)
                    disabled=move || !matches!(t.status.get(), TrainStatus::Running { .. })>"Pause"</button>
                <button class="secondary" data-testid="train-resume"
                    on:click=move |_| if let Some(name) = paused_name() { train::resume(bridge, t, name) }
                    disabled=move || !(t.status.get() == TrainStatus::Paused && ready())>"Resume"</button>
                <button class="secondary" data-testid="train-cancel" on:click=move |_| train::cancel(bridge, t)
                    disabled=move || !(running() || t.status.get() == TrainStatus::Paused)>"Cancel"</button>
            </div>
            <p class="status-line" data-testid="train-status" data-state=move || format!("{:?}", t.status.get()).to_lowercase()>
                {status_line}
            </p>
            {failure}
            {move || t.notice.get().map(|n| view! { <p class="notice" data-testid="train-notice">{n}</p> })}
            <LossPlot/>
            <Show when=move || t.status.get() == TrainStatus::Done>
                <p class="notice" data-testid="train-done">
                    {move || format!("Done: the adapter {} is in the Adapters panel, switched on.",
                        t.run.with(|r| r.as_ref().map(|r| r.name.clone()).unwrap_or_default()))}
                </p>
            </Show>
            <Exports/>
            <Checkpoints/>
        </section>
    }
}

/// The adapters trained in this page, each exportable.
#[component]
fn Exports() -> impl IntoView {
    let t = expect_context::<TrainState>();
    let bridge = expect_context::<Bridge>();
    view! {
        <ul class="entries" hidden=move || t.trained.with(|l| l.is_empty())>
            {move || t.trained.get().into_iter().map(|(id, name)| view! {
                <li class="entry" data-testid="train-export">
                    <span class="entry-name">{name}</span>
                    <span class="entry-actions">
                        <button class="link" data-testid="train-export-peft"
                            on:click=move |_| train::export(bridge, id, AdapterFormat::PeftZip)>"PEFT (.zip)"</button>
                        <button class="link" data-testid="train-export-gguf"
                            on:click=move |_| train::export(bridge, id, AdapterFormat::Gguf)>"GGUF"</button>
                    </span>
                </li>
            }).collect_view()}
        </ul>
    }
}

/// Runs with a stored checkpoint: resumable after a reload.
#[component]
fn Checkpoints() -> impl IntoView {
    let t = expect_context::<TrainState>();
    let bridge = expect_context::<Bridge>();
    let model = expect_context::<ModelState>();
    view! {
        <div hidden=move || t.checkpoints.with(|c| c.is_empty())>
            <h3>"Stored checkpoints"</h3>
            <ul class="entries">
                {move || t.checkpoints.get().into_iter().map(|c| {
                    let name = c.name.clone();
                    let delete_name = c.name.clone();
                    view! {
                        <li class="entry" data-testid="train-checkpoint" data-name=c.name.clone() data-step=c.step.to_string()>
                            <span class="entry-text">
                                <span class="entry-name">{c.name.clone()}</span>
                                <span class="muted">{format!("step {} of {} · {}", c.step, c.total_steps, c.model)}</span>
                            </span>
                            <span class="entry-actions">
                                <button class="link" data-testid="train-checkpoint-resume"
                                    disabled=move || t.status.with(|s| s.id().is_some()) || model.status.get() != Status::Ready
                                    on:click=move |_| train::resume(bridge, t, name.clone())>"Resume"</button>
                                <button class="link" on:click=move |_| {
                                    bridge.send(engine::protocol::Request::DeleteCheckpoint { name: delete_name.clone() });
                                    bridge.send(engine::protocol::Request::ListCheckpoints);
                                }>"Delete"</button>
                            </span>
                        </li>
                    }
                }).collect_view()}
            </ul>
        </div>
    }
}
