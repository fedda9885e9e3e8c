//! LoRA adapters through the worker: loading (by URL or from picked files), removing, the choice each generation
//! carries, and the worker's answers. A new model drops the worker's adapters (they were fitted to the old one), so
//! on every `Ready` the adapters that came from a URL are loaded again for the new model, keeping their switch and
//! scale, and those from picked files are marked for the user to open again.

use super::Bridge;
use crate::state::{LoadedLora, LoraLabel, LoraState, LoraStatus};
use engine::protocol::{Event, Request};
use engine::session::LoraChoice;
use leptos::prelude::*;

/// Asks the worker to load the adapter at `url` (a `.gguf`, or a PEFT folder).
pub fn load_url(bridge: Bridge, lora: LoraState, url: String) {
    lora.error.set(None);
    lora.pending.update(|n| *n += 1);
    bridge.send(Request::LoadLora { url });
}

/// Asks the worker to load the adapter in `files` (one `.gguf`, or a PEFT folder's two files).
pub fn load_files(bridge: Bridge, lora: LoraState, files: Vec<web_sys::File>) {
    if files.is_empty() {
        return;
    }
    lora.error.set(None);
    match bridge.send_with_files(Request::LoadLoraFiles, files) {
        Ok(()) => lora.pending.update(|n| *n += 1),
        Err(e) => lora.error.set(Some(e)),
    }
}

/// Forgets adapter `id` here at once and in the worker.
pub fn remove(bridge: Bridge, lora: LoraState, id: u64) {
    lora.adapters.update(|list| list.retain(|a| a.id != id));
    bridge.send(Request::RemoveLora { id });
}

/// The adapters the next reply applies (switched on, fitted to the loaded model, scale not 0), for the request and
/// for the reply's label.
pub fn choices(lora: LoraState) -> (Vec<LoraChoice>, Vec<LoraLabel>) {
    lora.adapters.with_untracked(|list| {
        list.iter()
            .filter(|a| a.enabled && a.status == LoraStatus::Ready && a.scale != 0.0)
            .map(|a| (LoraChoice { id: a.id, scale: a.scale }, LoraLabel { name: a.name.clone(), scale: a.scale }))
            .unzip()
    })
}

/// "adapter.gguf ×0.80, style ×1.00", or None for the base model.
pub fn label(labels: &[LoraLabel]) -> Option<String> {
    (!labels.is_empty())
        .then(|| labels.iter().map(|l| format!("{} ×{:.2}", l.name, l.scale)).collect::<Vec<_>>().join(", "))
}

fn answered(lora: LoraState) {
    lora.pending.update(|n| *n = n.saturating_sub(1));
}

pub fn on_event(event: &Event, bridge: Bridge, lora: LoraState) {
    match event {
        Event::LoraLoaded { id, name, info, url, bytes } => {
            answered(lora);
            lora.error.set(None);
            lora.adapters.update(|list| {
                let reloaded = list
                    .iter_mut()
                    .find(|a| a.status == LoraStatus::Reloading && a.url.is_some() && a.url == *url);
                match reloaded {
                    // The same adapter fitted to the new model: the user's switch and scale stay.
                    Some(a) => {
                        a.id = *id;
                        a.info = info.clone();
                        a.bytes = *bytes;
                        a.status = LoraStatus::Ready;
                    }
                    None => list.push(LoadedLora {
                        id: *id,
                        name: name.clone(),
                        info: info.clone(),
                        url: url.clone(),
                        bytes: *bytes,
                        enabled: true,
                        scale: 1.0,
                        status: LoraStatus::Ready,
                    }),
                }
            });
        }
        Event::LoraError { name, message } => {
            answered(lora);
            let mut dropped = false;
            lora.adapters.update(|list| {
                if let Some(at) = list.iter().position(|a| a.status == LoraStatus::Reloading && a.name == *name) {
                    list.remove(at);
                    dropped = true;
                }
            });
            let text = if dropped {
                format!("{name} does not fit the newly loaded model, so it was removed: {message}")
            } else {
                format!("{name}: {message}")
            };
            lora.error.set(Some(text));
        }
        Event::LoraRemoved { id } => lora.adapters.update(|list| list.retain(|a| a.id != *id)),
        Event::Ready { .. } => {
            let mut urls = Vec::new();
            lora.adapters.update(|list| {
                for a in list.iter_mut() {
                    match &a.url {
                        Some(url) => {
                            a.status = LoraStatus::Reloading;
                            urls.push(url.clone());
                        }
                        None => a.status = LoraStatus::Stale,
                    }
                }
            });
            for url in urls {
                lora.pending.update(|n| *n += 1);
                bridge.send(Request::LoadLora { url });
            }
        }
        _ => {}
    }
}
