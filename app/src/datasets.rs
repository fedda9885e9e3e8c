//! The Magpie dataset kept in the browser's IndexedDB (database "aviary-datasets"), so it survives reloads: one record
//! per row (a JSON string keyed by the row's id), so rows are written as they arrive without rewriting the rest, and
//! one meta record with the rows' order and the run's settings (so a paused run can be resumed after a reload).

use crate::conversations::{committed, js_error, open_database, request};
use dataset::Row;
use engine::magpie::MagpieSettings;
use js_sys::Array;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use web_sys::{IdbDatabase, IdbObjectStore, IdbTransaction, IdbTransactionMode};

/// The database the app uses; tests open their own.
pub const DATABASE: &str = "aviary-datasets";
const ROWS: &str = "rows";
const META: &str = "meta";
const META_KEY: &str = "dataset";
const VERSION: u32 = 1;

/// A Magpie run: the settings every row records, how many rows, how many decoded together (0: the backend's default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub settings: MagpieSettings,
    pub n: u64,
    pub batch: usize,
}

/// Everything but the rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// Row ids in the dataset's order.
    pub order: Vec<String>,
    /// The last run, when there was one.
    pub run: Option<RunSettings>,
    /// Whether that run stopped before its last row (paused, or cut off by a reload): it can be resumed.
    pub unfinished: bool,
}

/// What one write changes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Remove every row first.
    pub clear: bool,
    pub put: Vec<Row>,
    pub delete: Vec<String>,
    pub meta: Meta,
}

/// An open database.
pub struct DatasetStore {
    db: IdbDatabase,
}

/// A failure as the page shows it: a full quota says what to do about it.
fn friendly(e: String) -> String {
    if e.contains("QuotaExceeded") || e.to_lowercase().contains("quota") {
        format!("the browser's storage is full, so new rows are kept in this tab only (export them to keep them): {e}")
    } else {
        e
    }
}

impl DatasetStore {
    /// Opens (creating on first use) the database `name`.
    pub async fn open(name: &str) -> Result<DatasetStore, String> {
        Ok(DatasetStore { db: open_database(name, VERSION, &[ROWS, META], "opening the dataset storage").await? })
    }

    fn transaction(&self, mode: IdbTransactionMode) -> Result<(IdbTransaction, IdbObjectStore, IdbObjectStore), String> {
        let names = Array::of2(&ROWS.into(), &META.into());
        let tx = self
            .db
            .transaction_with_str_sequence_and_mode(&names, mode)
            .map_err(|e| js_error("starting a dataset transaction", e))?;
        let rows = tx.object_store(ROWS).map_err(|e| js_error("opening the rows store", e))?;
        let meta = tx.object_store(META).map_err(|e| js_error("opening the dataset store", e))?;
        Ok((tx, rows, meta))
    }

    /// The saved rows in their saved order, and the meta record. Rows that no longer parse are skipped (and
    /// logged), so one bad record does not hide the rest.
    pub async fn load(&self) -> Result<(Vec<Row>, Meta), String> {
        let (_tx, rows, meta) = self.transaction(IdbTransactionMode::Readonly)?;
        let all = rows.get_all().map_err(|e| js_error("reading the dataset", e))?;
        let saved_meta = meta.get(&META_KEY.into()).map_err(|e| js_error("reading the dataset", e))?;
        let all: Array = request(&all, "reading the dataset").await?.dyn_into().map_err(|_| "reading the dataset: not a list")?;
        let meta: Meta = match request(&saved_meta, "reading the dataset").await?.as_string() {
            Some(s) => serde_json::from_str(&s).unwrap_or_else(|e| {
                web_sys::console::warn_1(&format!("aviary: ignoring the dataset's unreadable settings: {e}").into());
                Meta::default()
            }),
            None => Meta::default(),
        };
        let mut by_id = std::collections::HashMap::new();
        for v in all.iter() {
            match v.as_string().map(|s| serde_json::from_str::<Row>(&s)) {
                Some(Ok(row)) => {
                    by_id.insert(row.id.clone(), row);
                }
                other => web_sys::console::warn_1(&format!("aviary: skipping an unreadable row: {other:?}").into()),
            }
        }
        let mut out: Vec<Row> = meta.order.iter().filter_map(|id| by_id.remove(id)).collect();
        // Rows the order does not list (a write cut short) come last, in a stable order.
        let mut rest: Vec<Row> = by_id.into_values().collect();
        rest.sort_by(|a, b| a.id.cmp(&b.id));
        out.extend(rest);
        Ok((out, meta))
    }

    /// Applies `changes` in one transaction: all of it is written, or none.
    pub async fn write(&self, changes: &Changes) -> Result<(), String> {
        let what = "saving the dataset";
        let (tx, rows, meta) = self.transaction(IdbTransactionMode::Readwrite).map_err(friendly)?;
        if changes.clear {
            rows.clear().map_err(|e| js_error(what, e))?;
        }
        for id in &changes.delete {
            rows.delete(&JsValue::from_str(id)).map_err(|e| js_error(what, e))?;
        }
        for row in &changes.put {
            let json = serde_json::to_string(row).map_err(|e| format!("{what}: {e}"))?;
            rows.put_with_key(&JsValue::from_str(&json), &JsValue::from_str(&row.id))
                .map_err(|e| friendly(js_error(what, e)))?;
        }
        let json = serde_json::to_string(&changes.meta).map_err(|e| format!("{what}: {e}"))?;
        meta.put_with_key(&JsValue::from_str(&json), &META_KEY.into()).map_err(|e| friendly(js_error(what, e)))?;
        committed(&tx, what).await.map_err(friendly)
    }

    /// Closes the connection (so a test can delete its database).
    pub fn close(self) {
        self.db.close();
    }
}
