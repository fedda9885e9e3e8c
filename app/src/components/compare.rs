//! The Compare view: two configurations of the loaded model — the base, or adapters from the Adapters panel at
//! their scales — answer the same instructions greedily, side by side. Each token is shaded by the KL divergence
//! between the two configurations' next-token distributions at that point (both read the same answer); a click
//! shows both sides' likeliest tokens. Each answer has its mean KL, and the whole comparison one in `compare-kl`.
//! Side A may instead be another model of the same vocabulary: a teacher beside the loaded student, as in Gemma 2's
//! distillation. A judge (the base model or the teacher) may score every answer 0–100 with ch. 7's prompt.

use crate::bridge::{train, Bridge};
use crate::state::{
    CompareRow, CompareState, DatasetState, LoraState, LoraStatus, ModelState, Status, Storage, TrainState,
};
use engine::protocol::{CompareSide, Judge, Request, Stage};
use engine::session::LoraChoice;
use leptos::prelude::*;

/// "Base" or "name ×scale" for the choices of one side.
fn side_label(lora: LoraState, choices: &[LoraChoice]) -> String {
    if choices.is_empty() {
        return "base model".into();
    }
    lora.adapters.with(|list| {
        choices
            .iter()
            .map(|c| {
                let name = list.iter().find(|a| a.id == c.id).map_or_else(|| format!("adapter {}", c.id), |a| a.name.clone());
                format!("{name} ×{:.2}", c.scale)
            })
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// A select of "base" and every ready adapter (at its panel scale) for side `s`; side A may also be another model,
/// a teacher beside the loaded student.
#[component]
fn SidePicker(s: usize, label: &'static str) -> impl IntoView {
    let cmp = expect_context::<CompareState>();
    let lora = expect_context::<LoraState>();
    let value = move || {
        if s == 0 && cmp.teacher.with(Option::is_some) {
            return "teacher".to_string();
        }
        cmp.sides.with(|sides| sides[s].first().map_or("base".to_string(), |c| c.id.to_string()))
    };
    view! {
        <label for=format!("compare-side-{s}")>{label}</label>
        <select id=format!("compare-side-{s}") data-testid=format!("compare-side-{s}") prop:value=value
            on:change=move |ev| {
                let v = event_target_value(&ev);
                if s == 0 {
                    let teacher = (v == "teacher").then(|| cmp.teacher.get_untracked().unwrap_or_default());
                    cmp.teacher.set(teacher);
                }
                let choice = v.parse::<u64>().ok().and_then(|id| {
                    lora.adapters.with_untracked(|l| l.iter().find(|a| a.id == id).map(|a| LoraChoice { id, scale: a.scale }))
                });
                cmp.sides.update(|sides| sides[s] = choice.into_iter().collect());
            }>
            <option value="base">"Base model"</option>
            {move || lora.adapters.get().into_iter().filter(|a| a.status == LoraStatus::Ready).map(|a| {
                view! { <option value=a.id.to_string()>{format!("{} ×{:.2}", a.name, a.scale)}</option> }
            }).collect_view()}
            {(s == 0).then(|| view! { <option value="teacher">"Another model (a teacher)…"</option> })}
        </select>
    }
}

/// The teacher's address (with the models kept in this browser offered), when side A is another model.
#[component]
fn TeacherPicker() -> impl IntoView {
    let cmp = expect_context::<CompareState>();
    let storage = expect_context::<Storage>();
    let stored = move || {
        storage.entries.with(|e| {
            e.iter()
                .filter(|e| e.complete && !e.adapter)
                .map(|e| view! { <option value=e.url.clone()>{e.name.clone()}</option> })
                .collect_view()
        })
    };
    move || {
        cmp.teacher.get().map(|url| {
            view! {
                <label for="compare-teacher">"Teacher model"</label>
                <div>
                    <input id="compare-teacher" data-testid="compare-teacher" list="compare-teacher-stored" type="url"
                        placeholder="models/….gguf or https://….gguf" prop:value=url
                        on:change=move |ev| cmp.teacher.set(Some(event_target_value(&ev)))/>
                    <datalist id="compare-teacher-stored">{stored}</datalist>
                    <p class="muted">"Loaded beside the loaded model for this comparison, on its device. It must share \
                        its vocabulary, as two sizes of one family do (SmolLM2-360M beside SmolLM2-135M)."</p>
                </div>
            }
        })
    }
}

/// Who scores the answers (ch. 7's 0–100 judge prompt): nobody, the base model, or the teacher.
#[component]
fn JudgePicker() -> impl IntoView {
    let cmp = expect_context::<CompareState>();
    let value = move || match cmp.judge.get() {
        None => "none",
        Some(Judge::Base) => "base",
        Some(Judge::Teacher) => "teacher",
    };
    view! {
        <label for="compare-judge">"Judge"</label>
        <select id="compare-judge" data-testid="compare-judge" prop:value=value
            title="Scores each answer from 0 to 100 against the dataset's answer to the instruction, when it has one \
                (ch. 7's judge prompt)"
            on:change=move |ev| cmp.judge.set(match event_target_value(&ev).as_str() {
                "base" => Some(Judge::Base),
                "teacher" => Some(Judge::Teacher),
                _ => None,
            })>
            <option value="none">"No scores"</option>
            <option value="base">"The base model scores 0–100"</option>
            <option value="teacher" disabled=move || cmp.teacher.with(Option::is_none)>"The teacher scores 0–100"</option>
        </select>
    }
}

/// Each side's mean judge score over the answers scored so far.
fn mean_scores(rows: &[CompareRow]) -> Option<String> {
    let mean = |side: CompareSide| {
        let scores: Vec<f64> =
            rows.iter().filter(|r| r.side == side).filter_map(|r| r.score.as_ref()?.0).map(f64::from).collect();
        (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
    };
    let scored = rows.iter().filter(|r| r.score.is_some()).count();
    (scored > 0).then(|| {
        let show = |m: Option<f64>| m.map_or("no number".to_string(), |m| format!("{m:.1}"));
        format!("Mean judge score — A: {} · B: {} ({scored} answers judged)", show(mean(CompareSide::A)), show(mean(CompareSide::B)))
    })
}

/// How far the teacher's download or upload has come.
fn loading_text(stage: Stage, done: u64, total: u64) -> String {
    let what = match stage {
        Stage::Download => "downloading the teacher",
        _ => "loading the teacher",
    };
    match total {
        0 => format!("{what}: {:.1} MB", done as f64 / 1e6),
        t => format!("{what}: {:.0}%", 100.0 * done as f64 / t as f64),
    }
}

/// Blue for tokens both sides agree on, red as the KL grows (1 nat and more is full red).
fn shade(kl: f32) -> String {
    let t = (kl / 1.0).clamp(0.0, 1.0);
    format!("background: rgba(220, 60, 60, {:.2})", 0.08 + 0.6 * t)
}

#[component]
fn Answer(row: CompareRow) -> impl IntoView {
    let selected = RwSignal::new(None::<usize>);
    let tokens = row.comparison.tokens.clone();
    let texts = row.texts.clone();
    let chips = row
        .pieces
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(i, (piece, t))| {
            view! {
                <button class="token" style=shade(t.kl) data-testid="compare-token" data-kl=t.kl.to_string()
                    data-token=t.token.to_string()
                    title=format!("KL {:.3} nats · p {:.3} vs q {:.3}", t.kl, t.p, t.q)
                    on:click=move |_| selected.update(|s| *s = if *s == Some(i) { None } else { Some(i) })>
                    {piece.clone()}
                </button>
            }
        })
        .collect_view();
    let detail = move || {
        let i = selected.get()?;
        let t = tokens.get(i)?.clone();
        let name = |id: u32| texts.get(&id).cloned().unwrap_or_else(|| format!("#{id}"));
        let list = |top: &[(u32, f32)]| {
            top.iter().map(|&(id, p)| view! { <li>{format!("{:?} {:.3}", name(id), p)}</li> }).collect_view()
        };
        Some(view! {
            <div class="compare-detail" data-testid="compare-detail">
                <p>{format!("KL {:.4} nats", t.kl)}</p>
                <div class="pair">
                    <div><strong>"A"</strong><ol>{list(&t.top_p)}</ol></div>
                    <div><strong>"B"</strong><ol>{list(&t.top_q)}</ol></div>
                </div>
            </div>
        })
    };
    let score = row.score.clone().map(|(score, reply)| {
        let text = match score {
            Some(s) => format!("judge: {s}/100"),
            None if reply.starts_with("the judge could not") => reply.clone(),
            None => format!("judge: no score in its answer ({:?})", reply.trim()),
        };
        view! {
            <span class="score" data-testid="compare-score" data-value=score.map(|s| s.to_string()).unwrap_or_default()
                title=reply>{text}</span>
        }
    });
    view! {
        <div class="compare-answer" data-testid="compare-answer" data-side=format!("{:?}", row.side)
            data-mean-kl=row.comparison.mean_kl.to_string()>
            <p class="muted">{format!("{} answered · mean KL {:.4} nats", match row.side { CompareSide::A => "A", CompareSide::B => "B" },
                row.comparison.mean_kl)} " " {score}</p>
            <div class="tokens">{chips}</div>
            {detail}
        </div>
    }
}

#[component]
pub fn CompareView() -> impl IntoView {
    let cmp = expect_context::<CompareState>();
    let lora = expect_context::<LoraState>();
    let ds = expect_context::<DatasetState>();
    let model = expect_context::<ModelState>();
    let bridge = expect_context::<Bridge>();
    // Held-out-looking instructions to start from: the last few of the dataset, when the box is empty.
    Effect::new(move |_| {
        let last: Vec<String> = ds.rows.with(|r| r.iter().rev().take(3).map(|r| r.instruction.replace('\n', " ")).collect());
        if cmp.instructions.with_untracked(|i| i.trim().is_empty()) && !last.is_empty() {
            cmp.instructions.set(last.join("\n"));
        }
    });
    let train_state = expect_context::<TrainState>();
    // Instructions whose answers are known (the Magpie dataset, the Train view's imported rows): the judge's references.
    let known = move || {
        let mut pairs: Vec<(String, String)> =
            ds.rows.with_untracked(|r| r.iter().map(|r| (r.instruction.replace('\n', " "), r.response.clone())).collect());
        train_state.imported.with_untracked(|i| {
            if let Some((_, records)) = i {
                pairs.extend(records.iter().map(|r| (r.instruction.replace('\n', " "), r.output.clone())));
            }
        });
        pairs
    };
    let mean = move || {
        cmp.rows.with(|rows| {
            let kls: Vec<f32> = rows.iter().flat_map(|r| r.comparison.tokens.iter().map(|t| t.kl)).collect();
            (!kls.is_empty()).then(|| kls.iter().sum::<f32>() / kls.len() as f32)
        })
    };
    let instructions = move || {
        let lines: Vec<String> = cmp.instructions.get().lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        lines
    };
    view! {
        <section class="panel compare" aria-label="Compare two configurations">
            <h2>"Compare"</h2>
            <p class="muted">"Two configurations of the loaded model — or a teacher model beside it — answer the same \
                instructions; each token is shaded by how far their next-token distributions part there (KL \
                divergence, as in Gemma 2's distillation)."</p>
            <div class="settings-grid">
                <SidePicker s=0 label="A"/>
                <TeacherPicker/>
                <SidePicker s=1 label="B"/>
                <JudgePicker/>
                <label for="compare-max">"Max tokens"</label>
                <input id="compare-max" type="number" min="1" max="512" data-testid="compare-max-tokens"
                    prop:value=move || cmp.max_tokens.get().to_string()
                    on:change={move |ev| {
                        if let Ok(v) = event_target_value(&ev).parse::<usize>() {
                            if (1..=512).contains(&v) {
                                cmp.max_tokens.set(v)
                            }
                        }
                    }}/>
            </div>
            <label for="compare-instructions">"Instructions, one per line"</label>
            <textarea id="compare-instructions" rows="3" data-testid="compare-instructions" bind:value=cmp.instructions></textarea>
            <div class="row">
                <button data-testid="compare-run" on:click=move |_| train::compare(bridge, cmp, &known())
                    disabled=move || cmp.running.get().is_some() || model.status.get() != Status::Ready>"Compare"</button>
                {move || cmp.running.get().map(|_| view! {
                    <button data-testid="compare-stop" on:click=move |_| bridge.send(Request::Cancel)>"Stop"</button>
                })}
                <span class="muted">{move || {
                    let a = match cmp.teacher.get() {
                        Some(url) => format!("teacher {}", url.rsplit('/').next().unwrap_or_default()),
                        None => side_label(lora, &cmp.sides.get()[0]),
                    };
                    format!("A: {a} · B: {}", side_label(lora, &cmp.sides.get()[1]))
                }}</span>
            </div>
            {move || cmp.loading.get().map(|(stage, done, total)| view! {
                <p data-testid="compare-loading" role="status">
                    {loading_text(stage, done, total)}
                    <progress max=total.max(1).to_string() value=done.to_string()></progress>
                </p>
            })}
            {move || cmp.error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <p data-testid="compare-kl" data-value=move || mean().map(|m| m.to_string()).unwrap_or_default()>
                {move || match (mean(), cmp.running.get()) {
                    (Some(m), _) => format!("Mean KL over every token: {m:.4} nats"),
                    (None, Some(_)) => "comparing…".to_string(),
                    (None, None) => String::new(),
                }}
            </p>
            <p data-testid="compare-scores">{move || cmp.rows.with(|rows| mean_scores(rows))}</p>
            {move || instructions().into_iter().enumerate().map(|(i, text)| {
                let rows = move || cmp.rows.with(|r| r.iter().filter(|r| r.index == i).cloned().collect::<Vec<_>>());
                view! {
                    <article class="compare-item">
                        <h3>{text}</h3>
                        <div class="pair">
                            {move || rows().into_iter().map(|row| view! { <Answer row/> }).collect_view()}
                        </div>
                    </article>
                }
            }).collect_view()}
        </section>
    }
}
