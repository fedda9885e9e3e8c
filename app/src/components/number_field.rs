//! A number input bound to one field of a settings signal (the Magpie and Synthesis forms): values that do not
//! parse, or fall outside `ok`, are refused and the input shows the value in use again.

use leptos::prelude::*;

#[component]
pub fn NumberField<S, T>(
    settings: RwSignal<S>,
    label: &'static str,
    testid: &'static str,
    step: &'static str,
    get: fn(&S) -> T,
    set: fn(&mut S, T),
    ok: fn(&T) -> bool,
) -> impl IntoView
where
    S: Send + Sync + 'static,
    T: std::str::FromStr + std::fmt::Display + 'static,
{
    view! {
        <label for=testid>{label}</label>
        <input id=testid type="number" step=step min="0" data-testid=testid
            prop:value=move || settings.with(|s| get(s).to_string())
            on:change=move |ev| {
                match event_target_value(&ev).trim().parse::<T>() {
                    Ok(v) if ok(&v) => settings.update(|s| set(s, v)),
                    // Notifies, so the input shows the value in use again.
                    _ => settings.update(|_| {}),
                }
            }/>
    }
}
