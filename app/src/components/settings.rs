//! Generation settings: system prompt, temperature (0 = greedy), seed, reply length.

use crate::state::Settings;
use leptos::prelude::*;

#[component]
pub fn SettingsView() -> impl IntoView {
    let s = expect_context::<Settings>();
    view! {
        <section class="panel settings">
            <h2>"Settings"</h2>
            <label for="system-prompt">"System prompt"</label>
            <textarea id="system-prompt" rows="2" bind:value=s.system_prompt></textarea>
            <label for="temperature">"Temperature (0 = greedy)"</label>
            <input id="temperature" type="number" min="0" max="2" step="0.1" data-testid="settings-temperature"
                prop:value=move || s.temperature.get().to_string()
                on:change=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<f32>() {
                        s.temperature.set(v.clamp(0.0, 5.0));
                    }
                }/>
            <label for="seed">"Seed"</label>
            <input id="seed" type="number" min="0" step="1" data-testid="settings-seed"
                prop:value=move || s.seed.get().to_string()
                on:change=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<u64>() {
                        s.seed.set(v);
                    }
                }/>
            <label for="max-tokens">"Max tokens"</label>
            <input id="max-tokens" type="number" min="1" step="1" data-testid="settings-max-tokens"
                prop:value=move || s.max_tokens.get().to_string()
                on:change=move |ev| {
                    if let Ok(v) = event_target_value(&ev).parse::<usize>() {
                        s.max_tokens.set(v.max(1));
                    }
                }/>
        </section>
    }
}
