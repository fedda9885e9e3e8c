//! The training and validation losses as an SVG line plot, redrawn as steps arrive. The series also sit in
//! `data-values` (JSON: {"train": [[step, loss]…], "val": […]}) for anything that reads them.

use crate::state::TrainState;
use leptos::prelude::*;

const W: f64 = 480.0;
const H: f64 = 180.0;
const PAD: f64 = 32.0;

/// SVG points of `series` scaled into the plot: x from 0 to `max_step`, y from `lo` to `hi`.
fn points(series: &[(u64, f32)], max_step: f64, lo: f64, hi: f64) -> String {
    let span = (hi - lo).max(1e-6);
    series
        .iter()
        .map(|&(s, l)| {
            let x = PAD + (s as f64 / max_step.max(1.0)) * (W - 2.0 * PAD);
            let y = H - PAD - ((l as f64 - lo) / span) * (H - 2.0 * PAD);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[component]
pub fn LossPlot() -> impl IntoView {
    let train = expect_context::<TrainState>();
    let values = move || {
        let pairs = |v: &Vec<(u64, f32)>| v.iter().map(|&(s, l)| serde_json::json!([s, l])).collect::<Vec<_>>();
        serde_json::json!({ "train": train.losses.with(pairs), "val": train.val_losses.with(pairs) }).to_string()
    };
    let bounds = move || {
        let all: Vec<f32> = train.losses.with(|l| l.iter().map(|p| p.1).collect::<Vec<_>>());
        let val: Vec<f32> = train.val_losses.with(|l| l.iter().map(|p| p.1).collect::<Vec<_>>());
        let finite = all.iter().chain(&val).copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v as f64), hi.max(v as f64)));
        let total = train.run.with(|r| r.as_ref().map_or(0, |r| r.total_steps)).max(train.step.get()) as f64;
        if lo.is_finite() { (0f64.min(lo), hi, total) } else { (0.0, 1.0, total) }
    };
    let train_line = move || {
        let (lo, hi, total) = bounds();
        train.losses.with(|l| points(l, total, lo, hi))
    };
    let val_line = move || {
        let (lo, hi, total) = bounds();
        train.val_losses.with(|l| points(l, total, lo, hi))
    };
    let axis = move || {
        let (lo, hi, total) = bounds();
        (format!("{hi:.2}"), format!("{lo:.2}"), format!("step {total:.0}"))
    };
    view! {
        <figure class="loss-plot">
            <svg data-testid="train-loss" data-values=values viewBox=format!("0 0 {W} {H}") role="img"
                aria-label="Training and validation loss by step">
                <line x1=PAD y1=H - PAD x2=W - PAD y2=H - PAD class="axis"/>
                <line x1=PAD y1=PAD x2=PAD y2=H - PAD class="axis"/>
                <text x="2" y=PAD + 4.0 class="tick">{move || axis().0}</text>
                <text x="2" y=H - PAD class="tick">{move || axis().1}</text>
                <text x=W - PAD - 40.0 y=H - 8.0 class="tick">{move || axis().2}</text>
                <polyline class="train" fill="none" points=train_line/>
                <polyline class="val" fill="none" points=val_line/>
            </svg>
            <figcaption class="muted">
                <span class="swatch train"></span>" training loss "
                <span class="swatch val"></span>" validation loss"
            </figcaption>
        </figure>
    }
}
