#![cfg(target_arch = "wasm32")]
//! The Magpie dataset's IndexedDB store in a real browser (run by scripts/web-test.sh): rows and the run are written
//! in one transaction, read back in the saved order, deleted one by one or cleared whole.

use aviary_app::datasets::{Changes, DatasetStore, Meta, RunSettings};
use dataset::{Row, Turn};
use engine::magpie::MagpieSettings;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn row(instruction: &str, response: &str) -> Row {
    Row::from_conversations(vec![Turn::human(instruction), Turn::gpt(response)])
}

#[wasm_bindgen_test]
async fn rows_and_run_save_load_delete_and_clear() {
    let name = format!("aviary-datasets-test-{}", js_sys::Date::now());
    let store = DatasetStore::open(&name).await.expect("open");
    let (rows, meta) = store.load().await.unwrap();
    assert!(rows.is_empty());
    assert_eq!(meta, Meta::default());

    let (a, b, c) = (row("Name a color.", "Red."), row("Add 2 and 2.", "4"), row("<b>Bold?</b>", "Text, not HTML."));
    let run = RunSettings { settings: MagpieSettings { seed: 7, ..Default::default() }, n: 3, batch: 2 };
    // Written in two bursts, listed in an order other than the ids'.
    let order = vec![c.id.clone(), a.id.clone(), b.id.clone()];
    let meta = Meta { order: order.clone(), run: Some(run.clone()), unfinished: true };
    store.write(&Changes { put: vec![a.clone(), c.clone()], meta: meta.clone(), ..Default::default() }).await.unwrap();
    store.write(&Changes { put: vec![b.clone()], meta: meta.clone(), ..Default::default() }).await.unwrap();

    let again = DatasetStore::open(&name).await.unwrap();
    let (rows, loaded) = again.load().await.unwrap();
    assert_eq!(rows, vec![c.clone(), a.clone(), b.clone()]);
    assert_eq!(loaded, meta);

    // An edited row replaces its record; a deleted one is gone.
    let mut a2 = a.clone();
    a2.conversations[0].value = "Name two colors.".into();
    a2.refresh_mirrors();
    let meta = Meta { order: vec![c.id.clone(), a.id.clone()], run: Some(run), unfinished: false };
    again.write(&Changes { put: vec![a2.clone()], delete: vec![b.id.clone()], meta: meta.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(store.load().await.unwrap(), (vec![c.clone(), a2], meta));

    // Clear, then the rows written with it, in one go.
    let meta = Meta { order: vec![b.id.clone()], run: None, unfinished: false };
    store.write(&Changes { clear: true, put: vec![b.clone()], meta: meta.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(again.load().await.unwrap(), (vec![b], meta));

    store.close();
    again.close();
    let factory = web_sys::window().unwrap().indexed_db().unwrap().unwrap();
    let _ = factory.delete_database(&name);
}
