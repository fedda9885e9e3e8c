//! LoRA adapters in the worker: reading an adapter (by URL, kept in the browser's storage as models are, or from
//! files the user picked), fitting it to the loaded model, and the stack a generation applies. The adapters live in
//! `serve` beside the model they were fitted to, so loading another model drops them with the old one.

use super::Loaded;
use aviary_app::blob_source::BlobSource;
use aviary_app::cached_source::read_adapter_file;
use aviary_app::js::file_name;
use engine::backend::Backend;
use engine::lora::{Adapter, LoraFile, LoraStack, MAX_ADAPTER_BYTES};
use engine::protocol::Event;
use engine::session::LoraChoice;
use engine::config::RopeLayout;
use engine::protocol::AdapterFormat;
use engine::train::export::peft_files;
use engine::train::gguf_export::gguf_lora;
use engine::train::TrainSettings;
use engine::{Error, Result};
use std::collections::BTreeMap;
use std::rc::Rc;
use web_sys::File;

const CONFIG: &str = "adapter_config.json";
const WEIGHTS: &str = "adapter_model.safetensors";

/// Where an adapter comes from.
pub enum Origin {
    /// A `.gguf` adapter's URL, or a PEFT folder's URL (its two files sit under it).
    Url(String),
    /// One `.gguf`, or a PEFT folder's two files.
    Files(Vec<File>),
}

impl Origin {
    /// The name a failure is reported under before the adapter is read.
    fn label(&self) -> String {
        match self {
            Origin::Url(url) => adapter_name(url),
            Origin::Files(files) => picked_name(files),
        }
    }
}

/// The adapters fitted to the loaded model, by the ids generations name them by.
pub struct Adapters<B: Backend> {
    loaded: BTreeMap<u64, Rc<Adapter<B>>>,
    /// Those trained here: their matrices (PEFT's layout) and run settings, for export.
    trained: BTreeMap<u64, (LoraFile, TrainSettings)>,
}

impl<B: Backend> Adapters<B> {
    pub fn new() -> Self {
        Adapters { loaded: BTreeMap::new(), trained: BTreeMap::new() }
    }

    /// An adapter the Train view just made (`file` in PEFT's layout).
    pub fn insert_trained(&mut self, adapter: Adapter<B>, file: LoraFile, settings: TrainSettings) {
        self.trained.insert(adapter.id, (file, settings));
        self.loaded.insert(adapter.id, Rc::new(adapter));
    }

    /// A trained adapter as a file to save: a PEFT folder zipped, or a llama.cpp GGUF.
    pub fn export(&self, m: &Loaded<B>, id: u64, format: AdapterFormat) -> Event {
        let Some((file, settings)) = self.trained.get(&id) else {
            return Event::error(None, "only adapters trained in this page can be exported (and only while their model is loaded)");
        };
        let name = self.loaded.get(&id).map_or_else(|| "adapter".to_string(), |a| a.name.clone());
        let c = &m.model.config;
        let made = match format {
            AdapterFormat::PeftZip => peft_files(file, c, RopeLayout::SplitHalves, settings, &name)
                .and_then(|files| zip_folder(&name, &files))
                .map(|bytes| (format!("{name}-peft.zip"), "application/zip", bytes)),
            AdapterFormat::Gguf => gguf_lora(file, c, RopeLayout::SplitHalves, settings.alpha)
                .map(|bytes| (format!("{name}.gguf"), "application/octet-stream", bytes)),
        };
        match made {
            Ok((name, mime, bytes)) => {
                use base64::Engine;
                Event::AdapterFile { name, mime: mime.into(), base64: base64::engine::general_purpose::STANDARD.encode(bytes) }
            }
            Err(e) => Event::error(None, format!("exporting the adapter failed: {e}")),
        }
    }

    /// The stack a generation asks for. An id not loaded here (removed, or fitted to a model since replaced) is an
    /// error rather than silently the base model: the reply would not be what its label says.
    pub fn stack(&self, choices: &[LoraChoice]) -> Result<LoraStack<B>> {
        let mut active = Vec::with_capacity(choices.len());
        for c in choices {
            if !c.scale.is_finite() {
                return Err(Error::InvalidArgument(format!("adapter {}: its scale {} is not a number", c.id, c.scale)));
            }
            let adapter = self.loaded.get(&c.id).ok_or_else(|| {
                Error::Adapter(format!(
                    "adapter {} is not loaded in the worker (it was removed, or made for the previous model): load it again",
                    c.id
                ))
            })?;
            active.push((adapter.clone(), c.scale));
        }
        Ok(LoraStack::new(active))
    }

    pub fn remove(&mut self, id: u64) {
        self.loaded.remove(&id);
    }

    /// Reads and fits an adapter; answers `LoraLoaded`, or `LoraError` with the model and the other adapters as
    /// they were.
    pub async fn load(&mut self, m: &Loaded<B>, origin: Origin) -> Event {
        let label = origin.label();
        let url = match &origin {
            Origin::Url(u) => Some(aviary_app::js::absolute_url(u.trim())),
            Origin::Files(_) => None,
        };
        let read = match origin {
            Origin::Url(u) => read_url(u.trim()).await,
            Origin::Files(files) => read_files(files).await,
        };
        let fitted = read.and_then(|(file, bytes)| {
            let adapter = Adapter::new(&m.backend, &m.model, &file, &label)?;
            Ok((adapter, bytes))
        });
        match fitted {
            Ok((adapter, bytes)) => {
                let event = Event::LoraLoaded { id: adapter.id, name: label, info: adapter.info.clone(), url, bytes };
                self.loaded.insert(adapter.id, Rc::new(adapter));
                event
            }
            Err(e) => Event::LoraError { name: label, message: plain(e) },
        }
    }
}

/// `files` in a zip under a folder named `name` (stored, not compressed: safetensors barely compress).
fn zip_folder(name: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let fail = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("zipping the adapter: {e}"));
    for (file, bytes) in files {
        zip.start_file(format!("{name}/{file}"), options).map_err(|e| fail(&e))?;
        zip.write_all(bytes).map_err(|e| fail(&e))?;
    }
    Ok(zip.finish().map_err(|e| fail(&e))?.into_inner())
}

/// An error in words for the panel (an adapter's own errors without the "adapter:" prefix the panel already says).
fn plain(e: Error) -> String {
    match e {
        Error::Adapter(m) => m,
        other => other.to_string(),
    }
}

/// What `LoadLora` or `LoadLoraFiles` answer while no model is loaded.
pub fn no_model(origin: &Origin) -> Event {
    Event::LoraError { name: origin.label(), message: "load a model first: an adapter is fitted to the loaded model".into() }
}

/// `url` without its query or fragment, and without a trailing slash.
fn url_path(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url).trim_end_matches('/')
}

fn is_gguf(url: &str) -> bool {
    url_path(url).to_lowercase().ends_with(".gguf")
}

/// A `.gguf` adapter's file name, or a PEFT folder's name.
fn adapter_name(url: &str) -> String {
    file_name(url_path(url.trim()))
}

async fn read_url(url: &str) -> Result<(LoraFile, u64)> {
    if url.is_empty() {
        return Err(Error::InvalidArgument("give the adapter's URL: a .gguf file, or a PEFT folder".into()));
    }
    if is_gguf(url) {
        let bytes = read_adapter_file(url).await?;
        return Ok((LoraFile::from_gguf(&bytes)?, bytes.len() as u64));
    }
    let base = url_path(url);
    let config = read_adapter_file(&format!("{base}/{CONFIG}")).await.map_err(|e| {
        Error::Adapter(format!(
            "{url} is not a .gguf adapter, so it should be a PEFT folder holding {CONFIG}, but reading that failed: {}",
            plain(e)
        ))
    })?;
    let weights = read_adapter_file(&format!("{base}/{WEIGHTS}")).await?;
    let bytes = (config.len() + weights.len()) as u64;
    Ok((LoraFile::from_peft(&config, &weights)?, bytes))
}

/// A picked file's path inside the folder the user picked ("adapter/adapter_config.json"), or its name.
fn relative_path(file: &File) -> String {
    js_sys::Reflect::get(file, &"webkitRelativePath".into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| file.name())
}

/// The picked `.gguf`'s name, or the PEFT folder's (when the folder was picked), or the weights file's.
fn picked_name(files: &[File]) -> String {
    if let Some(g) = files.iter().find(|f| f.name().to_lowercase().ends_with(".gguf")) {
        return g.name();
    }
    let path = files.iter().map(relative_path).find(|p| p.contains('/'));
    match path.as_deref().and_then(|p| p.rsplit_once('/')).map(|(dir, _)| dir.rsplit('/').next().unwrap_or(dir)) {
        Some(folder) if !folder.is_empty() => folder.to_string(),
        _ => files.first().map(|f| f.name()).unwrap_or_else(|| "adapter".into()),
    }
}

async fn read_file(file: &File) -> Result<Vec<u8>> {
    let len = file.size() as u64;
    if len > MAX_ADAPTER_BYTES {
        return Err(Error::Adapter(format!(
            "{} is {len} bytes, more than the {MAX_ADAPTER_BYTES} an adapter may have (is it a model?)",
            file.name()
        )));
    }
    BlobSource::new(file.clone().into(), file.name()).read_all().await
}

async fn read_files(files: Vec<File>) -> Result<(LoraFile, u64)> {
    let ggufs: Vec<&File> = files.iter().filter(|f| f.name().to_lowercase().ends_with(".gguf")).collect();
    match ggufs.as_slice() {
        [f] => {
            let bytes = read_file(f).await?;
            return Ok((LoraFile::from_gguf(&bytes)?, bytes.len() as u64));
        }
        [] => {}
        many => {
            return Err(Error::InvalidArgument(format!(
                "pick one .gguf adapter, not {} ({})",
                many.len(),
                many.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
            )))
        }
    }
    let find = |name: &str| files.iter().find(|f| f.name() == name);
    let (Some(config), Some(weights)) = (find(CONFIG), find(WEIGHTS)) else {
        let hint = if find("adapter_model.bin").is_some() {
            " (adapter_model.bin is a pickle: save the adapter with safe_serialization=True)"
        } else {
            ""
        };
        return Err(Error::Adapter(format!(
            "pick a .gguf adapter, or a PEFT folder's {CONFIG} and {WEIGHTS}{hint}"
        )));
    };
    let (config, weights) = (read_file(config).await?, read_file(weights).await?);
    let bytes = (config.len() + weights.len()) as u64;
    Ok((LoraFile::from_peft(&config, &weights)?, bytes))
}
