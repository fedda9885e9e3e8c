//! Generation settings: system prompt, the sampler's knobs (temperature 0 = greedy), seed, reply length. They are
//! kept in localStorage, so a reload keeps them. The defaults sample (greedy decoding loops on small models): the
//! model's own generation defaults where its files name them, else [`SamplingParams::chat`]; "Greedy" is one click
//! away, and Reset puts back the defaults.

use crate::state::{ModelState, Settings};
use engine::sampling::SamplingParams;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

const STORAGE_KEY: &str = "aviary.settings";
const DEFAULT_MAX_TOKENS: usize = 256;

/// The settings as localStorage keeps them; fields missing from an older save take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Saved {
    system_prompt: String,
    max_tokens: usize,
    sampling: SamplingParams,
}

impl Default for Saved {
    fn default() -> Self {
        Saved { system_prompt: String::new(), max_tokens: DEFAULT_MAX_TOKENS, sampling: SamplingParams::chat() }
    }
}

impl Saved {
    fn read(s: &Settings) -> Saved {
        Saved {
            system_prompt: s.system_prompt.get(),
            max_tokens: s.max_tokens.get(),
            sampling: s.sampling(),
        }
    }

    fn apply(self, s: &Settings) {
        s.system_prompt.set(self.system_prompt);
        s.max_tokens.set(self.max_tokens.max(1));
        apply_sampling(s, self.sampling);
    }
}

/// Puts `p` into the settings panel (also what a restored share link does).
pub fn apply_sampling(s: &Settings, p: SamplingParams) {
    s.temperature.set(p.temperature);
    s.top_k.set(p.top_k);
    s.top_p.set(p.top_p);
    s.min_p.set(p.min_p);
    s.repeat_penalty.set(p.repeat_penalty);
    s.repeat_last_n.set(p.repeat_last_n);
    s.seed.set(p.seed);
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// Restores the saved settings and keeps saving them as they change. Called once by `App`.
pub fn persist_settings() {
    let s = expect_context::<Settings>();
    let saved = local_storage().and_then(|st| st.get_item(STORAGE_KEY).ok().flatten());
    if let Some(json) = saved {
        match serde_json::from_str::<Saved>(&json) {
            // A hand-edited or corrupt save must not put the sampler out of range: such a save is ignored.
            Ok(v) if v.sampling.validate().is_ok() => v.apply(&s),
            other => web_sys::console::warn_1(&format!("aviary: ignoring saved settings: {other:?}").into()),
        }
    }
    // A model that names its own sampling defaults gets them, unless the user has moved away from the built-in ones.
    let model = expect_context::<ModelState>();
    Effect::new(move |_| {
        let own = model.card.with(|c| c.as_ref().and_then(|c| c.sampling.clone()));
        if let Some(own) = own {
            if untrack(|| Saved::read(&s).sampling) == SamplingParams::chat() {
                apply_sampling(&s, own);
            }
        }
    });
    Effect::new(move |_| {
        let json = serde_json::to_string(&Saved::read(&s)).unwrap_or_default();
        if let Some(st) = local_storage() {
            if let Err(e) = st.set_item(STORAGE_KEY, &json) {
                web_sys::console::warn_2(&"aviary: could not save the settings".into(), &e);
            }
        }
    });
}

/// A number input bound to `signal`: values that do not parse, or fall outside `ok`, are refused (the input shows
/// the signal's value again).
#[component]
fn NumberSetting<T>(
    label: &'static str,
    id: &'static str,
    testid: &'static str,
    signal: RwSignal<T>,
    step: &'static str,
    ok: fn(&T) -> bool,
) -> impl IntoView
where
    T: std::str::FromStr + std::fmt::Display + Clone + Send + Sync + 'static,
{
    view! {
        <label for=id>{label}</label>
        <input id=id type="number" step=step min="0" data-testid=testid
            prop:value=move || signal.get().to_string()
            on:change=move |ev| {
                match event_target_value(&ev).trim().parse::<T>() {
                    Ok(v) if ok(&v) => signal.set(v),
                    // Put the last good value back, so what is shown is what is used.
                    _ => signal.set(signal.get_untracked()),
                }
            }/>
    }
}

#[component]
pub fn SettingsView() -> impl IntoView {
    let s = expect_context::<Settings>();
    let model = expect_context::<ModelState>();
    let reset = move |_| {
        Saved::default().apply(&s);
        if let Some(own) = model.card.with_untracked(|c| c.as_ref().and_then(|c| c.sampling.clone())) {
            apply_sampling(&s, own);
        }
    };
    let greedy = move |_| apply_sampling(&s, SamplingParams::greedy());
    view! {
        <section class="panel settings">
            <h2>"Settings"</h2>
            <label for="system-prompt">"System prompt"</label>
            <textarea id="system-prompt" rows="2" data-testid="settings-system" bind:value=s.system_prompt></textarea>
            <div class="settings-grid">
                <NumberSetting label="Temperature (0 = greedy)" id="temperature" testid="settings-temperature"
                    signal=s.temperature step="0.1" ok={|v: &f32| v.is_finite() && (0.0..=5.0).contains(v)}/>
                <NumberSetting label="Top-k (0 = off)" id="top-k" testid="settings-top-k"
                    signal=s.top_k step="1" ok={|_: &usize| true}/>
                <NumberSetting label="Top-p (1 = off)" id="top-p" testid="settings-top-p"
                    signal=s.top_p step="0.05" ok={|v: &f32| (0.0..=1.0).contains(v)}/>
                <NumberSetting label="Min-p (0 = off)" id="min-p" testid="settings-min-p"
                    signal=s.min_p step="0.01" ok={|v: &f32| (0.0..=1.0).contains(v)}/>
                <NumberSetting label="Repeat penalty (1 = off)" id="repeat-penalty" testid="settings-repeat-penalty"
                    signal=s.repeat_penalty step="0.05" ok={|v: &f32| v.is_finite() && *v > 0.0}/>
                <NumberSetting label="…over the last n tokens" id="repeat-last-n" testid="settings-repeat-last-n"
                    signal=s.repeat_last_n step="1" ok={|_: &usize| true}/>
                <NumberSetting label="Max tokens" id="max-tokens" testid="settings-max-tokens"
                    signal=s.max_tokens step="1" ok={|v: &usize| *v >= 1}/>
                <NumberSetting label="Seed" id="seed" testid="settings-seed"
                    signal=s.seed step="1" ok={|_: &u64| true}/>
            </div>
            <div class="settings-presets">
                <button class="secondary" data-testid="preset-greedy" title="Temperature 0, no penalty, seed 0: the same reply every time"
                    on:click=greedy>"Greedy"</button>
                <button class="secondary" data-testid="settings-reset" on:click=reset>"Reset to defaults"</button>
            </div>
        </section>
    }
}
