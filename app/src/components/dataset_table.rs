//! The dataset as it grows: a table of rows (sortable by column, searchable, filtered by a quality preset with what
//! each filter removed), a detail panel to read a whole row, edit its instruction and response, or delete it, and
//! export (ShareGPT, OpenAI, Alpaca JSONL) and import. Everything a model wrote is shown as text.

use crate::files;
use crate::state::DatasetState;
use dataset::filters::Preset;
use dataset::{Format, Row};
use leptos::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Index,
    Instruction,
    Response,
    Difficulty,
    Quality,
    Category,
}

impl Col {
    const ALL: [Col; 6] = [Col::Index, Col::Instruction, Col::Response, Col::Difficulty, Col::Quality, Col::Category];

    fn label(self) -> &'static str {
        match self {
            Col::Index => "#",
            Col::Instruction => "Instruction",
            Col::Response => "Response",
            Col::Difficulty => "Difficulty",
            Col::Quality => "Quality",
            Col::Category => "Category",
        }
    }

    fn testid(self) -> &'static str {
        match self {
            Col::Index => "magpie-sort-index",
            Col::Instruction => "magpie-sort-instruction",
            Col::Response => "magpie-sort-response",
            Col::Difficulty => "magpie-sort-difficulty",
            Col::Quality => "magpie-sort-quality",
            Col::Category => "magpie-sort-category",
        }
    }
}

/// A tag's place on its scale ("very easy" before "easy"), untagged last.
fn rank(value: &Option<String>, scale: &[&str]) -> usize {
    value.as_deref().and_then(|v| scale.iter().position(|s| s.eq_ignore_ascii_case(v))).unwrap_or(usize::MAX)
}

fn compare(col: Col, a: &Row, b: &Row) -> std::cmp::Ordering {
    let index = |r: &Row| r.gen_input_configs.as_ref().map_or(u64::MAX, |c| c.sample_index);
    match col {
        Col::Index => index(a).cmp(&index(b)),
        Col::Instruction => a.instruction.to_lowercase().cmp(&b.instruction.to_lowercase()),
        Col::Response => a.response.to_lowercase().cmp(&b.response.to_lowercase()),
        Col::Difficulty => rank(&a.tags.difficulty, &dataset::DIFFICULTY).cmp(&rank(&b.tags.difficulty, &dataset::DIFFICULTY)),
        Col::Quality => rank(&a.tags.input_quality, &dataset::INPUT_QUALITY).cmp(&rank(&b.tags.input_quality, &dataset::INPUT_QUALITY)),
        Col::Category => a.tags.task_category.cmp(&b.tags.task_category),
    }
}

/// What the table's `For` keys a row by: its id and a hash of what it shows, so an edit or a tag redraws it.
fn fingerprint(row: &Row) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let tags = [&row.tags.difficulty, &row.tags.input_quality, &row.tags.task_category];
    for part in [row.instruction.as_str(), row.response.as_str()].into_iter().chain(tags.iter().map(|t| t.as_deref().unwrap_or("-"))) {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn preset_from(value: &str) -> Preset {
    Preset::ALL.into_iter().find(|p| p.name() == value).unwrap_or(Preset::None)
}

#[component]
pub fn DatasetTable() -> impl IntoView {
    let ds = expect_context::<DatasetState>();
    let preset = RwSignal::new(Preset::None);
    let search = RwSignal::new(String::new());
    let sort = RwSignal::new(None::<(Col, bool)>);
    let selected = RwSignal::new(None::<String>);
    let message = RwSignal::new(None::<String>);

    // Indices of the rows the preset keeps, and what each filter removed (nothing to run for "none").
    let report = Memo::new(move |_| {
        let p = preset.get();
        ds.rows.with(|rows| {
            if p == Preset::None {
                dataset::filters::FilterReport { kept: (0..rows.len()).collect(), removed: Vec::new() }
            } else {
                dataset::filters::apply(rows, &p.settings())
            }
        })
    });
    let shown = Memo::new(move |_| {
        let needle = search.get().to_lowercase();
        let kept = report.get().kept;
        ds.rows.with(|rows| {
            let mut list: Vec<&Row> = kept
                .iter()
                .filter_map(|&i| rows.get(i))
                .filter(|r| {
                    needle.is_empty()
                        || r.conversations.iter().any(|t| t.value.to_lowercase().contains(&needle))
                })
                .collect();
            if let Some((col, ascending)) = sort.get() {
                list.sort_by(|a, b| if ascending { compare(col, a, b) } else { compare(col, b, a) });
            }
            list.into_iter().cloned().collect::<Vec<Row>>()
        })
    });
    let kept_rows = move || {
        let kept = report.get_untracked().kept;
        ds.rows.with_untracked(|rows| kept.iter().filter_map(|&i| rows.get(i).cloned()).collect::<Vec<_>>())
    };
    let export = move |format: Format| {
        let rows = kept_rows();
        let name = format!("magpie-{}{}", files::today(), format.file_suffix());
        let result = files::download(&name, &dataset::export(&rows, format), "application/jsonl");
        message.set(Some(match result {
            Ok(()) => format!("exported {} rows as {name}", rows.len()),
            Err(e) => format!("export failed: {e}"),
        }));
    };
    let import = move |ev: leptos::ev::Event| {
        for file in files::take_input_files(&ev) {
            leptos::task::spawn_local(async move {
                match files::read_text(&file).await {
                    Ok(text) => message.set(Some(import_text(ds, &file.name(), &text))),
                    Err(e) => message.set(Some(e)),
                }
            });
        }
    };
    let confirming = RwSignal::new(false);
    let count = move || {
        let total = ds.rows.with(|r| r.len());
        let kept = report.with(|r| r.kept.len());
        let shown = shown.with(|s| s.len());
        if kept == total && shown == total { format!("{total} rows") } else { format!("{shown} shown of {total} rows ({kept} kept by the filter)") }
    };
    let removed = move || {
        report.with(|r| {
            r.removed
                .iter()
                .map(|(name, n)| view! { <li data-testid="magpie-filter-count" data-filter=name.clone()>{format!("{name}: {n}")}</li> })
                .collect_view()
        })
    };
    let sort_by = move |col: Col| {
        sort.update(|s| {
            *s = match *s {
                Some((c, true)) if c == col => Some((col, false)),
                Some((c, false)) if c == col => None,
                _ => Some((col, true)),
            }
        })
    };
    let arrow = move |col: Col| match sort.get() {
        Some((c, true)) if c == col => " ▲",
        Some((c, false)) if c == col => " ▼",
        _ => "",
    };

    view! {
        <section class="panel dataset" data-testid="dataset-panel">
            <div class="dataset-head">
                <h2>"Dataset"</h2>
                <span class="muted" data-testid="magpie-count">{count}</span>
            </div>
            <div class="dataset-tools">
                <input type="search" placeholder="Search the rows" aria-label="Search the rows" data-testid="magpie-search"
                    bind:value=search/>
                <label class="inline" for="magpie-filter">"Filter"</label>
                <select id="magpie-filter" data-testid="magpie-filter" prop:value=move || preset.get().name()
                    on:change=move |ev| preset.set(preset_from(&event_target_value(&ev)))>
                    {Preset::ALL.into_iter().map(|p| view! { <option value=p.name()>{p.name()}</option> }).collect_view()}
                </select>
            </div>
            <ul class="filter-counts">{removed}</ul>
            <div class="row dataset-actions">
                <button class="secondary" data-testid="magpie-export" on:click=move |_| export(Format::ShareGpt)>"Export ShareGPT"</button>
                <button class="secondary" data-testid="magpie-export-openai" on:click=move |_| export(Format::OpenAi)>"Export OpenAI"</button>
                <button class="secondary" data-testid="magpie-export-alpaca" on:click=move |_| export(Format::Alpaca)>"Export Alpaca"</button>
                <label class="file-button" title="JSONL in ShareGPT, OpenAI or Alpaca form">
                    "Import JSONL…"
                    <input type="file" accept=".jsonl,.json,.txt" data-testid="magpie-import" on:change=import/>
                </label>
                <Show when=move || confirming.get() fallback=move || view! {
                    <button class="secondary danger" data-testid="magpie-clear" on:click=move |_| confirming.set(true)
                        disabled=move || ds.rows.with(|r| r.is_empty()) || ds.busy()>"Clear"</button>
                }>
                    <button class="stop" data-testid="magpie-clear-confirm" on:click=move |_| {
                        confirming.set(false);
                        selected.set(None);
                        ds.clear();
                    }>{move || format!("Delete all {} rows", ds.rows.with(|r| r.len()))}</button>
                    <button class="secondary" on:click=move |_| confirming.set(false)>"Keep them"</button>
                </Show>
            </div>
            {move || message.get().map(|m| view! { <p class="muted" data-testid="magpie-import-message">{m}</p> })}
            {move || ds.storage_error.get().map(|e| view! { <p class="error" data-testid="magpie-storage-error">{e}</p> })}
            <RowDetail selected=selected/>
            <div class="table-wrap">
                <table class="dataset-table">
                    <thead>
                        <tr>
                            {Col::ALL.into_iter().map(|col| view! {
                                <th scope="col">
                                    <button class="link sort" data-testid=col.testid() on:click=move |_| sort_by(col)>
                                        {col.label()}{move || arrow(col)}
                                    </button>
                                </th>
                            }).collect_view()}
                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr>
                    </thead>
                    <tbody>
                        <For each=move || shown.get() key=|r| (r.id.clone(), fingerprint(r)) let:row>
                            <TableRow row=row selected=selected/>
                        </For>
                    </tbody>
                </table>
            </div>
            <Show when=move || ds.rows.with(|r| r.is_empty())>
                <p class="muted empty">"No rows yet: start a Magpie run, or import a JSONL file."</p>
            </Show>
        </section>
    }
}

/// Adds the rows of an imported file; says how many, and which lines could not be read.
fn import_text(ds: DatasetState, name: &str, text: &str) -> String {
    let imported = dataset::import(text);
    let mut added = 0;
    let total = imported.rows.len();
    for row in imported.rows {
        if ds.put_row(row) {
            added += 1;
        }
    }
    let mut message = format!("{name}: imported {total} rows ({added} new, {} replaced)", total - added);
    if !imported.errors.is_empty() {
        let lines: Vec<String> = imported.errors.iter().map(|e| e.line.to_string()).collect();
        const SHOWN: usize = 5;
        let details: Vec<String> = imported.errors.iter().take(SHOWN).map(|e| e.to_string()).collect();
        let more = imported.errors.len().saturating_sub(SHOWN);
        message.push_str(&format!(
            "; {} malformed line(s) skipped: {} ({}{})",
            imported.errors.len(),
            lines.join(", "),
            details.join("; "),
            if more > 0 { format!("; and {more} more") } else { String::new() }
        ));
    }
    message
}

fn tag_cell(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

#[component]
fn TableRow(row: Row, selected: RwSignal<Option<String>>) -> impl IntoView {
    let id = row.id.clone();
    let index = row.gen_input_configs.as_ref().map(|c| c.sample_index.to_string()).unwrap_or_default();
    let index_attr = index.clone();
    let open = {
        let id = id.clone();
        move |_| selected.set(Some(id.clone()))
    };
    let is_open = {
        let id = id.clone();
        move || selected.with(|s| s.as_deref() == Some(id.as_str()))
    };
    view! {
        <tr data-testid="magpie-row" data-id=id.clone() data-index=index_attr class:open=is_open>
            <td class="num">{index}</td>
            <td class="cell-text" data-testid="magpie-row-instruction"><div class="clamp">{row.instruction.clone()}</div></td>
            <td class="cell-text" data-testid="magpie-row-response"><div class="clamp">{row.response.clone()}</div></td>
            <td data-testid="magpie-row-difficulty">{tag_cell(&row.tags.difficulty)}</td>
            <td data-testid="magpie-row-quality">{tag_cell(&row.tags.input_quality)}</td>
            <td data-testid="magpie-row-category">{tag_cell(&row.tags.task_category)}</td>
            <td><button class="link" data-testid="magpie-row-open" on:click=open>"Open"</button></td>
        </tr>
    }
}

/// The open row: every turn, the first instruction and response editable, Delete.
#[component]
fn RowDetail(selected: RwSignal<Option<String>>) -> impl IntoView {
    let ds = expect_context::<DatasetState>();
    let instruction = RwSignal::new(String::new());
    let response = RwSignal::new(String::new());
    let current = Memo::new(move |_| {
        let id = selected.get()?;
        ds.rows.with(|rows| rows.iter().find(|r| r.id == id).cloned())
    });
    // Opening a row fills the editors; rows arriving meanwhile do not overwrite what is being typed.
    Effect::new(move |_| {
        if let Some(id) = selected.get() {
            if let Some(row) = ds.rows.with_untracked(|rows| rows.iter().find(|r| r.id == id).cloned()) {
                instruction.set(row.instruction);
                response.set(row.response);
            }
        }
    });
    let save = move |_| {
        if let Some(id) = selected.get_untracked() {
            ds.edit_row(&id, instruction.get_untracked(), response.get_untracked());
        }
    };
    let delete = move |_| {
        if let Some(id) = selected.get_untracked() {
            selected.set(None);
            ds.delete_row(&id);
        }
    };
    move || {
        current.get().map(|row| {
            let turns = row
                .conversations
                .iter()
                .map(|t| view! { <div class=format!("turn {}", t.from)><span class="turn-from">{t.from.clone()}</span><div class="turn-text">{t.value.clone()}</div></div> })
                .collect_view();
            let configs = row.gen_input_configs.as_ref().map(|c| {
                format!("sample {} · seed {} · instruction T {} top-p {} · response T {} · {}", c.sample_index, c.seed, c.temperature, c.top_p, c.response_temperature, c.model)
            });
            view! {
                <div class="detail" data-testid="magpie-detail" data-id=row.id.clone()>
                    <div class="detail-head">
                        <h3>{format!("Row {}", row.id)}</h3>
                        <button class="link" data-testid="magpie-detail-close" on:click=move |_| selected.set(None)>"Close"</button>
                    </div>
                    {configs.map(|c| view! { <p class="muted">{c}</p> })}
                    <div class="turns">{turns}</div>
                    <label for="magpie-edit-instruction">"Instruction"</label>
                    <textarea id="magpie-edit-instruction" rows="3" data-testid="magpie-edit-instruction" bind:value=instruction></textarea>
                    <label for="magpie-edit-response">"Response"</label>
                    <textarea id="magpie-edit-response" rows="6" data-testid="magpie-edit-response" bind:value=response></textarea>
                    <div class="row">
                        <button data-testid="magpie-edit-save" on:click=save>"Save"</button>
                        <button class="secondary danger" data-testid="magpie-row-delete" on:click=delete>"Delete row"</button>
                    </div>
                </div>
            }
        })
    }
}
