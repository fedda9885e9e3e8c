//! Training checkpoints in the browser's private file system (OPFS): `aviary-train/<run>/step-<N>/` holds a
//! checkpoint's files, and `aviary-train/<run>/latest.json` names the newest complete one. It is written last, after
//! every file of the new checkpoint, so a closed tab or a full disk mid-write leaves the previous checkpoint whole;
//! the older step folder is deleted after.

use crate::js::{call_async, get, js_error_name, js_text, object};
use engine::train::job::{CheckpointInfo, TrainJob};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wasm_bindgen::JsValue;

const ROOT: &str = "aviary-train";
const LATEST: &str = "latest.json";
/// The run's job (its records and settings), so a resume after a reload needs nothing from the page.
const JOB: &str = "job.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latest {
    dir: String,
    info: CheckpointInfo,
}

fn failed(what: &str, e: &JsValue) -> String {
    match js_error_name(e).as_deref() {
        Some("QuotaExceededError") => format!("the browser's storage is full while {what}: free some space (delete a stored model)"),
        _ => format!("{what}: {}", js_text(e)),
    }
}

/// A run's name as a folder name: letters, digits, `-` and `_` kept, anything else `_`.
pub fn folder_of(name: &str) -> String {
    let cleaned: String = name.chars().take(80).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if cleaned.is_empty() { "run".into() } else { cleaned }
}

async fn dir(parent: &JsValue, name: &str, create: bool) -> Result<JsValue, JsValue> {
    call_async(parent, "getDirectoryHandle", &[&name.into(), &object(&[("create", create.into())])]).await
}

async fn root(create: bool) -> Result<JsValue, String> {
    let navigator = get(&js_sys::global(), "navigator").map_err(|e| e.to_string())?;
    let storage = get(&navigator, "storage").map_err(|e| e.to_string())?;
    if storage.is_undefined() {
        return Err("this browser offers no storage for checkpoints".into());
    }
    let top = call_async(&storage, "getDirectory", &[]).await.map_err(|e| failed("opening the private file system", &e))?;
    dir(&top, ROOT, create).await.map_err(|e| failed("opening the checkpoints' folder", &e))
}

async fn write(dir: &JsValue, name: &str, bytes: &[u8]) -> Result<(), JsValue> {
    let handle = call_async(dir, "getFileHandle", &[&name.into(), &object(&[("create", true.into())])]).await?;
    let w = call_async(&handle, "createWritable", &[]).await?;
    let data = js_sys::Uint8Array::from(bytes);
    call_async(&w, "write", &[&data.into()]).await?;
    call_async(&w, "close", &[]).await?;
    Ok(())
}

async fn read(dir: &JsValue, name: &str) -> Result<Vec<u8>, JsValue> {
    let handle = call_async(dir, "getFileHandle", &[&name.into()]).await?;
    let file = call_async(&handle, "getFile", &[]).await?;
    let buffer = call_async(&file, "arrayBuffer", &[]).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Writes run `name`'s job (once, as it starts).
pub async fn save_job(name: &str, job: &TrainJob) -> Result<(), String> {
    let root = root(true).await?;
    let run = dir(&root, &folder_of(name), true).await.map_err(|e| failed("making the run's folder", &e))?;
    let bytes = serde_json::to_vec(job).map_err(|e| e.to_string())?;
    write(&run, JOB, &bytes).await.map_err(|e| failed("writing the run's data", &e))
}

/// Writes a checkpoint of run `name` and makes it the latest.
pub async fn save(name: &str, info: &CheckpointInfo, files: &[(String, Vec<u8>)]) -> Result<(), String> {
    let root = root(true).await?;
    let run = dir(&root, &folder_of(name), true).await.map_err(|e| failed("making the run's folder", &e))?;
    let previous = read(&run, LATEST).await.ok().and_then(|b| serde_json::from_slice::<Latest>(&b).ok());
    let step_dir = format!("step-{}", info.step);
    let target = dir(&run, &step_dir, true).await.map_err(|e| failed("making the checkpoint's folder", &e))?;
    for (file, bytes) in files {
        write(&target, file, bytes).await.map_err(|e| failed(&format!("writing the checkpoint's {file}"), &e))?;
    }
    let latest = serde_json::to_vec(&Latest { dir: step_dir.clone(), info: info.clone() }).unwrap_or_default();
    write(&run, LATEST, &latest).await.map_err(|e| failed("recording the checkpoint", &e))?;
    if let Some(p) = previous.filter(|p| p.dir != step_dir) {
        let _ = call_async(&run, "removeEntry", &[&p.dir.into(), &object(&[("recursive", true.into())])]).await;
    }
    Ok(())
}

/// The latest checkpoint of run `name`: its description, its job and its files.
pub async fn load(name: &str) -> Result<(CheckpointInfo, TrainJob, BTreeMap<String, Vec<u8>>), String> {
    let root = root(false).await.map_err(|_| format!("no checkpoint of {name} is stored"))?;
    let run = dir(&root, &folder_of(name), false).await.map_err(|_| format!("no checkpoint of {name} is stored"))?;
    let latest: Latest = read(&run, LATEST)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("the checkpoint of {name} is incomplete"))?;
    let job: TrainJob = read(&run, JOB)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("the data of {name}'s run is missing or unreadable"))?;
    let step = dir(&run, &latest.dir, false).await.map_err(|e| failed("opening the checkpoint", &e))?;
    let mut files = BTreeMap::new();
    for file in engine::train::export::CHECKPOINT_FILES {
        let bytes = read(&step, file).await.map_err(|e| failed(&format!("reading the checkpoint's {file}"), &e))?;
        files.insert(file.to_string(), bytes);
    }
    Ok((latest.info, job, files))
}

/// Every stored run's latest checkpoint.
pub async fn list() -> Vec<CheckpointInfo> {
    let Ok(root) = root(false).await else { return Vec::new() };
    let mut out = Vec::new();
    let Ok(entries) = crate::js::call(&root, "values", &[]) else { return out };
    loop {
        let Ok(next) = call_async(&entries, "next", &[]).await else { break };
        if get(&next, "done").ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            break;
        }
        let Ok(handle) = get(&next, "value") else { break };
        if get(&handle, "kind").ok().and_then(|k| k.as_string()).as_deref() != Some("directory") {
            continue;
        }
        let latest = read(&handle, LATEST).await.ok().and_then(|b| serde_json::from_slice::<Latest>(&b).ok());
        if let Some(l) = latest {
            out.push(l.info);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Deletes run `name`'s checkpoints.
pub async fn delete(name: &str) {
    if let Ok(root) = root(false).await {
        let _ = call_async(&root, "removeEntry", &[&folder_of(name).into(), &object(&[("recursive", true.into())])]).await;
    }
}
