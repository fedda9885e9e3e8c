//! The Magpie run: its settings (the loaded model, the pre-query template the worker derives for it and the system
//! prompt, both steps' sampling, turns, N, B, seed), Start / Pause / Resume / Cancel, the judge, and progress. The
//! rows themselves are in the dataset table.

use crate::bridge::runs::{self, model_name};
use crate::bridge::Bridge;
use crate::format;
use crate::state::{DatasetState, ModelState, RunSettings, RunStatus, Status, SystemChoice};
use engine::magpie::SystemPreset;
use crate::components::number_field::NumberField;
use leptos::prelude::*;

#[component]
fn CheckField(label: &'static str, testid: &'static str, get: fn(&RunSettings) -> bool, set: fn(&mut RunSettings, bool)) -> impl IntoView {
    let ds = expect_context::<DatasetState>();
    view! {
        <label class="check">
            <input type="checkbox" data-testid=testid prop:checked=move || ds.form.with(get)
                on:change=move |ev| ds.form.update(|f| set(f, event_target_checked(&ev)))/>
            {label}
        </label>
    }
}

fn choice_value(c: SystemChoice) -> &'static str {
    match c {
        SystemChoice::None => "none",
        SystemChoice::Custom => "custom",
        SystemChoice::Preset(p) => p.name(),
    }
}

fn choice_from(value: &str) -> SystemChoice {
    match value {
        "custom" => SystemChoice::Custom,
        other => SystemPreset::from_name(other).map_or(SystemChoice::None, SystemChoice::Preset),
    }
}

/// The run's settings.
#[component]
fn MagpieForm() -> impl IntoView {
    let ds = expect_context::<DatasetState>();
    let model = expect_context::<ModelState>();
    let bridge = expect_context::<Bridge>();
    // A new model or system prompt has its own pre-query template: ask the worker for it.
    Effect::new(move |_| {
        let loaded = model.card.with(|c| c.as_ref().map(|c| c.source.clone()));
        let system = runs::system_prompt(ds);
        if loaded.is_some() {
            runs::request_pre_query(bridge, system);
        }
    });
    let model_line = move || match (model.card.get(), model_name(model)) {
        (Some(card), Some(file)) => format!("{} ({file})", card.name),
        _ => "no model loaded".to_string(),
    };
    let info = move || ds.pre_query.get();
    view! {
        <div class="magpie-form">
            <label>"Model"</label>
            <p class="readonly" data-testid="magpie-model">{model_line}</p>
            <label for="magpie-system">"System prompt"</label>
            <select id="magpie-system" data-testid="magpie-system"
                prop:value=move || choice_value(ds.system_choice.get())
                on:change=move |ev| ds.system_choice.set(choice_from(&event_target_value(&ev)))>
                <option value="none">"None"</option>
                <option value="custom">"Custom…"</option>
                {SystemPreset::ALL.into_iter().map(|p| view! { <option value=p.name()>{p.name()}</option> }).collect_view()}
            </select>
            <Show when=move || ds.system_choice.get() == SystemChoice::Custom>
                <textarea rows="3" data-testid="magpie-custom-system" aria-label="Custom system prompt"
                    bind:value=ds.custom_system></textarea>
            </Show>
            <Show when=move || matches!(ds.system_choice.get(), SystemChoice::Preset(_))>
                <p class="muted preset-text">{move || runs::system_prompt(ds).unwrap_or_default()}</p>
            </Show>
            <label for="magpie-template">"Pre-query template (what the model continues to write an instruction)"</label>
            <textarea id="magpie-template" rows="2" class="mono" data-testid="magpie-template" spellcheck="false"
                prop:value=move || ds.form.with(|f| f.settings.pre_query_template.clone())
                on:input=move |ev| ds.form.update(|f| f.settings.pre_query_template = event_target_value(&ev))></textarea>
            {move || info().error.map(|e| view! { <p class="error" data-testid="magpie-template-error">{e}</p> })}
            <ul class="notes" data-testid="magpie-notes">
                {move || info().notes.into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}
            </ul>
            <fieldset>
                <legend>"Instruction step"</legend>
                <div class="settings-grid">
                    <NumberField settings=ds.form label="Temperature" testid="magpie-ins-temperature" step="0.05"
                        get={|f| f.settings.instruction.temperature} set={|f, v| f.settings.instruction.temperature = v}
                        ok={|v: &f32| v.is_finite() && (0.0..=5.0).contains(v)}/>
                    <NumberField settings=ds.form label="Top-p" testid="magpie-ins-top-p" step="0.01"
                        get={|f| f.settings.instruction.top_p} set={|f, v| f.settings.instruction.top_p = v}
                        ok={|v: &f32| *v > 0.0 && *v <= 1.0}/>
                    <NumberField settings=ds.form label="Max tokens" testid="magpie-ins-max-tokens" step="1"
                        get={|f| f.settings.instruction.max_tokens} set={|f, v| f.settings.instruction.max_tokens = v}
                        ok={|v: &usize| *v >= 1}/>
                </div>
                <CheckField label="Stop at the first newline" testid="magpie-stop-at-newline"
                    get={|f| f.settings.stop_at_newline} set={|f, v| f.settings.stop_at_newline = v}/>
                <CheckField label="Sanitise (strip \"Task:\" labels, cut at \"Answer:\")" testid="magpie-sanitize"
                    get={|f| f.settings.sanitize} set={|f, v| f.settings.sanitize = v}/>
            </fieldset>
            <fieldset>
                <legend>"Response step"</legend>
                <div class="settings-grid">
                    <NumberField settings=ds.form label="Temperature (0 = greedy)" testid="magpie-temperature" step="0.05"
                        get={|f| f.settings.response.temperature} set={|f, v| f.settings.response.temperature = v}
                        ok={|v: &f32| v.is_finite() && (0.0..=5.0).contains(v)}/>
                    <NumberField settings=ds.form label="Top-p" testid="magpie-top-p" step="0.01"
                        get={|f| f.settings.response.top_p} set={|f, v| f.settings.response.top_p = v}
                        ok={|v: &f32| *v > 0.0 && *v <= 1.0}/>
                    <NumberField settings=ds.form label="Max tokens" testid="magpie-max-tokens" step="1"
                        get={|f| f.settings.response.max_tokens} set={|f, v| f.settings.response.max_tokens = v}
                        ok={|v: &usize| *v >= 1}/>
                </div>
            </fieldset>
            <div class="settings-grid">
                <NumberField settings=ds.form label="Turns" testid="magpie-turns" step="1"
                    get={|f| f.settings.turns} set={|f, v| f.settings.turns = v} ok={|v: &u32| (1..=16).contains(v)}/>
                <NumberField settings=ds.form label="Rows (N)" testid="magpie-n" step="1" get={|f| f.n} set={|f, v| f.n = v} ok={|v: &u64| *v >= 1}/>
                <BatchField/>
                <NumberField settings=ds.form label="Seed" testid="magpie-seed" step="1"
                    get={|f| f.settings.seed} set={|f, v| f.settings.seed = v} ok={|_: &u64| true}/>
            </div>
        </div>
    }
}

/// B: empty (0) leaves it to the worker, which picks by backend.
#[component]
fn BatchField() -> impl IntoView {
    let ds = expect_context::<DatasetState>();
    let model = expect_context::<ModelState>();
    let placeholder = move || {
        model.backend.with(|b| match b {
            Some(info) => format!("auto: {}", aviary_app::run_rules::default_batch(info)),
            None => "auto".to_string(),
        })
    };
    view! {
        <label for="magpie-batch">"Batch (B)"</label>
        <input id="magpie-batch" type="number" step="1" min="0" data-testid="magpie-batch" placeholder=placeholder
            prop:value=move || ds.form.with(|f| if f.batch == 0 { String::new() } else { f.batch.to_string() })
            on:change=move |ev| {
                let text = event_target_value(&ev);
                match text.trim() {
                    "" => ds.form.update(|f| f.batch = 0),
                    t => match t.parse::<usize>() {
                        Ok(v) if v <= engine::batch::MAX_BATCH => ds.form.update(|f| f.batch = v),
                        _ => ds.form.update(|_| {}),
                    },
                }
            }/>
    }
}

/// Start / Pause / Resume / Cancel, the judge, and how the run goes.
#[component]
fn MagpieControls() -> impl IntoView {
    let ds = expect_context::<DatasetState>();
    let model = expect_context::<ModelState>();
    let bridge = expect_context::<Bridge>();
    let running = move || ds.status.with(|s| s.running_id().is_some());
    let resumable = move || matches!(ds.status.get(), RunStatus::Paused | RunStatus::Failed(_)) && ds.run.with(|r| r.is_some());
    let ready = move || model.status.get() == Status::Ready;
    let can_start = move || ready() && !ds.busy();
    let status_text = move || match ds.status.get() {
        RunStatus::Idle if ds.progress.with(|p| p.is_some_and(|p| p.done >= p.n)) => "done".to_string(),
        RunStatus::Idle => "idle".to_string(),
        RunStatus::Running { .. } => "running".to_string(),
        RunStatus::Paused => "paused".to_string(),
        RunStatus::Failed(e) => format!("failed: {e}"),
    };
    let progress = move || {
        ds.progress.get().map(|p| {
            let mut parts = vec![format!("{} / {} rows", p.done, p.n)];
            if p.rows_per_minute > 0.0 {
                parts.push(format!("{:.1} rows/min", p.rows_per_minute));
            }
            if p.tokens_per_second > 0.0 {
                parts.push(format!("{:.1} tokens/s", p.tokens_per_second));
            }
            if let (true, Some(left)) = (running(), p.seconds_left()) {
                parts.push(format!("{} left", format::duration(left)));
            }
            view! {
                <progress max=p.n.to_string() value=p.done.to_string()></progress>
                <p class="muted" data-testid="magpie-progress-text">{parts.join(" · ")}</p>
            }
        })
    };
    let judge = move || ds.judge.get();
    view! {
        <div class="row controls">
            <Show when=running fallback=move || view! {
                <button data-testid="magpie-start" on:click=move |_| runs::start_magpie(bridge) disabled=move || !can_start()>"Start"</button>
            }>
                <button class="secondary" data-testid="magpie-stop" on:click=move |_| runs::pause_magpie(bridge)>"Pause"</button>
            </Show>
            <Show when=resumable>
                <button data-testid="magpie-resume" on:click=move |_| runs::resume_magpie(bridge) disabled=move || !can_start()>"Resume"</button>
            </Show>
            <Show when=move || running() || resumable()>
                <button class="stop" data-testid="magpie-cancel" on:click=move |_| runs::cancel_magpie(bridge)>"Cancel"</button>
            </Show>
            <Show when=move || judge().is_some() fallback=move || view! {
                <button class="secondary" data-testid="magpie-judge" on:click=move |_| runs::judge_untagged(bridge)
                    disabled=move || !can_start() || ds.rows.with(|r| r.is_empty())>"Tag with judge"</button>
            }>
                <button class="secondary" data-testid="magpie-judge-stop" on:click=move |_| runs::stop_judge(bridge)>"Stop judging"</button>
            </Show>
        </div>
        <div class="progress" data-testid="magpie-progress" data-status=status_text
            data-stats=move || ds.progress.with(|p| p.and_then(|p| p.stats).and_then(|s| serde_json::to_string(&s).ok()))>
            <p class="muted" class:error=move || ds.status.with(|s| matches!(s, RunStatus::Failed(_)))
                data-testid="magpie-status">{status_text}</p>
            {progress}
            {move || judge().map(|j| view! { <p class="muted" data-testid="magpie-judge-progress">{format!("tagged {} of {}", j.done, j.total)}</p> })}
        </div>
        {move || ds.notice.get().map(|n| view! { <p class="notice" data-testid="magpie-notice" role="status">{n}</p> })}
    }
}

#[component]
pub fn MagpieView() -> impl IntoView {
    view! {
        <section class="panel magpie" data-testid="magpie-panel">
            <h2>"Magpie"</h2>
            <p class="muted">"An aligned model given only the start of a user's turn writes an instruction; it then answers it. Rows depend only on the seed, the settings and their index."</p>
            <MagpieForm/>
            <MagpieControls/>
        </section>
    }
}
