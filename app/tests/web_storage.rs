//! The worker's model sources and storage, on the browser APIs they use (run by scripts/web-test.sh in headless
//! Chromium): a `Blob` read at offsets, and the OPFS store's index and downloads (models and LoRA adapters, whose
//! size is capped), checked against bytes the test writes itself.
#![cfg(target_arch = "wasm32")]

use aviary_app::blob_source::{BlobSource, READ_AHEAD};
use aviary_app::download::{Download, Kind};
use aviary_app::http_source::CancelCheck;
use aviary_app::opfs::{file_for, Index, Opfs, Record};
use engine::source::ByteSource;
use engine::Error;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// 1000 bytes where byte i is (i * 7 + 3) mod 256, so any misplaced read shows.
fn pattern() -> Vec<u8> {
    (0..1000u32).map(|i| ((i * 7 + 3) % 256) as u8).collect()
}

fn blob(bytes: &[u8]) -> web_sys::Blob {
    let parts = js_sys::Array::new();
    parts.push(&js_sys::Uint8Array::from(bytes));
    web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap()
}

fn never() -> CancelCheck {
    Rc::new(|| false)
}

#[wasm_bindgen_test]
async fn blob_source_reads_the_right_bytes_at_odd_offsets() {
    let bytes = pattern();
    let src = BlobSource::new(blob(&bytes), "pattern.bin");
    assert_eq!(src.len(), 1000);
    for (offset, len) in [(0usize, 1usize), (1, 7), (333, 250), (999, 1), (0, 1000), (517, 0)] {
        let got = src.read_at(offset as u64, len).await.unwrap();
        assert_eq!(got, &bytes[offset..offset + len], "read of {len} at {offset}");
    }
    assert_eq!(src.read_all().await.unwrap(), bytes);
}

/// Reads as a model's load makes them, on a blob of 2½ read-ahead windows: forward through a window, back before
/// it, across its end, one larger than a window, and up to the blob's end — each the blob's own bytes.
#[wasm_bindgen_test]
async fn blob_source_reads_ahead_and_still_gives_the_right_bytes() {
    let n = READ_AHEAD * 5 / 2;
    let bytes: Vec<u8> = (0..n as u64).map(|i| (i * 7 + i / 251) as u8).collect();
    let src = BlobSource::new(blob(&bytes), "big.bin");
    let w = READ_AHEAD;
    for (offset, len) in [
        (100, 1000),
        (1100, 5000),
        (w / 2, 3),
        (50, 10),
        (60 + w - 20, 40),
        (w + 7, w + 1),
        (n - 9, 9),
        (w + 100, 17),
        (0, n),
    ] {
        let got = src.read_at(offset as u64, len).await.unwrap();
        assert!(got == bytes[offset..offset + len], "read of {len} at {offset}");
    }
}

#[wasm_bindgen_test]
async fn blob_source_refuses_reads_past_the_end() {
    let src = BlobSource::new(blob(&pattern()), "pattern.bin");
    for (offset, len) in [(999u64, 2usize), (1000, 1), (u64::MAX, 1), (0, 1001)] {
        match src.read_at(offset, len).await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("past the end of pattern.bin"), "{m}"),
            other => panic!("read of {len} at {offset}: expected an error, got {:?}", other.map(|v| v.len())),
        }
    }
}

#[wasm_bindgen_test]
async fn a_cancelled_blob_source_stops_reading() {
    let src = BlobSource::new(blob(&pattern()), "p").with_cancel(Rc::new(|| true));
    assert!(matches!(src.read_at(0, 10).await, Err(Error::Cancelled)));
}

fn record(url: &str, complete: bool, saved_at_ms: f64) -> Record {
    Record { url: url.into(), name: "m.gguf".into(), file: file_for(url), bytes: 10, saved_at_ms, complete, adapter: false }
}

#[wasm_bindgen_test]
fn the_index_round_trips_and_keeps_one_record_per_url() {
    let mut index = Index::default();
    index.put(record("https://a/m.gguf", false, 1.0));
    index.put(record("https://b/m.gguf", true, 3.0));
    index.put(record("https://a/m.gguf", true, 2.0)); // the finished download replaces the partial one
    let back = Index::from_json(index.to_json().as_bytes());
    assert_eq!(back, index);
    assert_eq!(back.records.len(), 2);
    assert_eq!(back.entries().iter().map(|e| e.url.as_str()).collect::<Vec<_>>(), ["https://b/m.gguf", "https://a/m.gguf"]);
    assert!(back.complete("https://a/m.gguf").is_some());
    // An unreadable index is an empty one: its models are downloaded again, never trusted.
    assert_eq!(Index::from_json(b"{not json"), Index::default());
    assert_ne!(file_for("https://a/m.gguf"), file_for("https://b/m.gguf"));
}

#[wasm_bindgen_test]
fn a_partial_download_is_not_complete() {
    let mut index = Index::default();
    index.put(record("https://a/m.gguf", false, 1.0));
    assert!(index.complete("https://a/m.gguf").is_none());
    assert!(!index.entries()[0].complete);
    assert!(index.remove("https://a/m.gguf").is_some());
    assert!(index.get("https://a/m.gguf").is_none());
}

/// A fresh OPFS directory of its own for each test.
async fn scratch(name: &str) -> Opfs {
    let root = aviary_app::js::call_async(
        &aviary_app::js::get(&aviary_app::js::get(&js_sys::global(), "navigator").unwrap(), "storage").unwrap(),
        "getDirectory",
        &[],
    )
    .await
    .expect("OPFS in the test browser");
    let options = aviary_app::js::object(&[("recursive", JsValue::TRUE)]);
    let _ = aviary_app::js::call_async(&root, "removeEntry", &[&name.into(), &options]).await;
    Opfs::open_dir(name).await.unwrap()
}

/// A page-relative URL serving `bytes` (a blob: URL, which `fetch` reads like any other).
fn blob_url(bytes: &[u8]) -> String {
    web_sys::Url::create_object_url_with_blob(&blob(bytes)).unwrap()
}

#[wasm_bindgen_test]
async fn opfs_download_stores_the_file_and_marks_it_complete() {
    let opfs = scratch("aviary-test-download").await;
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let url = blob_url(&bytes);
    assert!(opfs.lookup(&url).await.is_none());
    let seen = std::cell::RefCell::new(Vec::new());
    let (record, file) = opfs.download(&url, &never(), &|d, t| seen.borrow_mut().push((d, t))).await.ok().unwrap();
    assert!(record.complete);
    assert_eq!(record.bytes, bytes.len() as u64);
    assert_eq!(file.size() as u64, bytes.len() as u64);
    let seen = seen.into_inner();
    assert_eq!(seen.last(), Some(&(bytes.len() as u64, bytes.len() as u64)), "progress ends at the whole file");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress only grows: {seen:?}");
    // Read back through the stored copy, at an odd offset.
    let (again, file) = opfs.lookup(&url).await.expect("found after the download");
    assert_eq!(again, record);
    let src = Opfs::source(&again, file, never());
    assert_eq!(src.read_at(1_234_567, 1000).await.unwrap(), &bytes[1_234_567..1_235_567]);
    let entries = opfs.entries().await;
    assert_eq!(entries.len(), 1);
    assert!(entries[0].complete && entries[0].bytes == bytes.len() as u64);
    opfs.forget(&url).await;
    assert!(opfs.lookup(&url).await.is_none());
    assert!(opfs.entries().await.is_empty());
}

#[wasm_bindgen_test]
async fn a_cancelled_download_leaves_nothing_complete() {
    let opfs = scratch("aviary-test-cancel").await;
    let bytes = vec![7u8; 4_000_000];
    let url = blob_url(&bytes);
    let cancelled: CancelCheck = Rc::new(|| true);
    let result = opfs.download(&url, &cancelled, &|_, _| {}).await;
    assert!(matches!(result, Err(aviary_app::opfs::StoreError::Other(Error::Cancelled))));
    assert!(opfs.lookup(&url).await.is_none());
    assert!(opfs.entries().await.iter().all(|e| !e.complete), "a cancelled download is never listed complete");
}

#[wasm_bindgen_test]
async fn a_record_whose_file_does_not_match_is_not_loaded() {
    let opfs = scratch("aviary-test-mismatch").await;
    let url = "https://example.org/m.gguf";
    // The index says complete, but the file holds fewer bytes than it says (a file cut short outside the app).
    let mut index = Index::default();
    index.put(Record { bytes: 100, ..record(url, true, 1.0) });
    opfs.write_index(&index).await.ok().unwrap();
    opfs.write_text(&file_for(url), "short").await.ok().unwrap();
    assert!(opfs.lookup(url).await.is_none());
    assert!(!opfs.entries().await[0].complete);
}

#[wasm_bindgen_test]
async fn an_adapter_is_stored_and_listed_as_one() {
    let opfs = scratch("aviary-test-adapter").await;
    let bytes = pattern();
    let url = blob_url(&bytes);
    let (record, _) = opfs.download_kind(&url, Kind::Adapter, &never(), &|_, _| {}).await.ok().unwrap();
    assert!(record.complete && record.adapter);
    let entries = opfs.entries().await;
    assert!(entries.len() == 1 && entries[0].adapter && entries[0].bytes == 1000);
    // An index written before adapters existed lists models.
    let old = r#"{"records":[{"url":"u","name":"m.gguf","file":"f.bin","bytes":1,"saved_at_ms":1.0,"complete":true}]}"#;
    assert!(!Index::from_json(old.as_bytes()).entries()[0].adapter);
}

#[wasm_bindgen_test]
async fn a_download_over_its_cap_is_refused_before_it_is_stored() {
    let url = blob_url(&pattern());
    match Download::start_limited(&url, Some(999)).await {
        Err(Error::Adapter(m)) => assert!(m.contains("larger than 999 bytes"), "{m}"),
        other => panic!("expected the cap to refuse it, got {:?}", other.map(|d| d.total)),
    }
    assert!(Download::start_limited(&url, Some(1000)).await.is_ok());
}
