//! Where the dataset meets IndexedDB (datasets.rs): the saved rows and run are read at start, and every change is
//! written shortly after it happens — rows arrive several a second during a run, and one write per burst is enough.
//! A failed write keeps its changes for the next one and shows why; the rows in memory are never touched by it.

use crate::datasets::{Changes, DatasetStore, Meta, DATABASE};
use crate::state::{DatasetState, Dirty, RunProgress, RunStatus, SystemChoice};
use engine::magpie::SystemPreset;
use leptos::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

const SAVE_DELAY: Duration = Duration::from_millis(400);

#[derive(Default)]
struct Writer {
    /// The open database, kept so a write (the last one, as the page goes away) begins without awaiting an open.
    store: Option<Rc<DatasetStore>>,
    scheduled: bool,
    writing: bool,
}

thread_local! {
    static WRITER: RefCell<Writer> = RefCell::new(Writer::default());
}

async fn store() -> Result<Rc<DatasetStore>, String> {
    if let Some(s) = WRITER.with(|w| w.borrow().store.clone()) {
        return Ok(s);
    }
    let s = Rc::new(DatasetStore::open(DATABASE).await?);
    WRITER.with(|w| w.borrow_mut().store = Some(s.clone()));
    Ok(s)
}

/// Reads the saved dataset, then saves every change. Called once by `App`.
pub fn persist_dataset() {
    let ds = expect_context::<DatasetState>();
    leptos::task::spawn_local(async move {
        let result = async { store().await?.load().await }.await;
        match result {
            Ok((rows, meta)) => restore(ds, rows, meta),
            Err(e) => {
                web_sys::console::error_1(&format!("aviary: {e}").into());
                ds.storage_error.set(Some(e));
            }
        }
        ds.loaded.set(true);
    });
    Effect::new(move |_| {
        ds.version.track();
        if ds.loaded.get() {
            schedule(ds);
        }
    });
    if let Some(w) = web_sys::window() {
        let on_hide = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || write_now(ds));
        let _ = w.add_event_listener_with_callback("pagehide", wasm_bindgen::JsCast::unchecked_ref(on_hide.as_ref()));
        on_hide.forget(); // as long as the page
    }
}

fn restore(ds: DatasetState, rows: Vec<dataset::Row>, meta: Meta) {
    // Rows that came before the read finished (an import) stay, after the saved ones.
    let fresh = ds.rows.get_untracked();
    let had_fresh = !fresh.is_empty();
    let mut all = rows;
    for row in fresh {
        if !all.iter().any(|r| r.id == row.id) {
            all.push(row);
        }
    }
    ds.rows.set(all);
    if let Some(run) = meta.run {
        let choice = match &run.settings.system_prompt {
            None => SystemChoice::None,
            Some(text) => match SystemPreset::ALL.into_iter().find(|p| p.text() == text) {
                Some(p) => SystemChoice::Preset(p),
                None => {
                    ds.custom_system.set(text.clone());
                    SystemChoice::Custom
                }
            },
        };
        ds.system_choice.set(choice);
        ds.form.set(run.clone());
        if ds.status.get_untracked() == RunStatus::Idle {
            let missing = crate::bridge::runs::missing(ds, &run).len() as u64;
            ds.progress.set(Some(RunProgress { done: run.n - missing, n: run.n, ..Default::default() }));
            if meta.unfinished && missing > 0 {
                // The page went away mid-run: what was made is here, and Resume makes the rest.
                ds.status.set(RunStatus::Paused);
            }
        }
        ds.run.set(Some(run));
    }
    if had_fresh {
        ds.touch();
    }
}

fn schedule(ds: DatasetState) {
    let first = WRITER.with(|w| !std::mem::replace(&mut w.borrow_mut().scheduled, true));
    if first {
        set_timeout(move || write_now(ds), SAVE_DELAY);
    }
}

/// What the dirty marks and the state say to write now.
fn changes(ds: DatasetState, dirty: Dirty) -> Changes {
    let (put, order) = ds.rows.with_untracked(|rows| {
        let put = rows.iter().filter(|r| dirty.put.contains(&r.id)).cloned().collect();
        (put, rows.iter().map(|r| r.id.clone()).collect())
    });
    let unfinished = matches!(ds.status.get_untracked(), RunStatus::Running { .. } | RunStatus::Paused | RunStatus::Failed(_));
    Changes {
        clear: dirty.cleared,
        put,
        delete: dirty.deleted.into_iter().collect(),
        meta: Meta { order, run: ds.run.get_untracked(), unfinished },
    }
}

fn write_now(ds: DatasetState) {
    let busy = WRITER.with(|w| {
        let mut w = w.borrow_mut();
        w.scheduled = false;
        w.writing
    });
    if busy {
        // One write at a time, so they land in order; this one follows the one in flight.
        schedule(ds);
        return;
    }
    if !ds.loaded.get_untracked() {
        return;
    }
    let dirty = ds.dirty.try_update_value(std::mem::take).unwrap_or_default();
    let retry = Dirty { cleared: dirty.cleared, put: dirty.put.clone(), deleted: dirty.deleted.clone() };
    let changes = changes(ds, dirty);
    WRITER.with(|w| w.borrow_mut().writing = true);
    leptos::task::spawn_local(async move {
        let result = match store().await {
            Ok(s) => s.write(&changes).await,
            Err(e) => Err(e),
        };
        WRITER.with(|w| w.borrow_mut().writing = false);
        match result {
            Ok(()) => ds.storage_error.set(None),
            Err(e) => {
                web_sys::console::error_1(&format!("aviary: {e}").into());
                ds.storage_error.set(Some(e));
                // Kept for the next write, which the next change schedules.
                ds.dirty.update_value(|d| {
                    d.cleared |= retry.cleared;
                    d.put.extend(retry.put.into_iter().filter(|id| !d.deleted.contains(id)));
                    d.deleted.extend(retry.deleted);
                });
            }
        }
    });
}
