//! Where a load's bytes come from, chosen once per load: a model by URL is read from the browser's storage (OPFS,
//! else Cache Storage), downloaded whole into it first when it is not there; only where neither storage works is it
//! streamed from the server with HTTP Range requests. Files the user picked are read where they lie.

use crate::blob_source::BlobSource;
use crate::cache_storage::CacheStore;
use crate::download::Kind;
use crate::http_source::{CancelCheck, HttpSource};
use crate::js::{absolute_url, io};
use crate::opfs::{Opfs, Record, StoreError};
use engine::format::safetensors;
use engine::model::ModelFiles;
use engine::protocol::{CacheEntry, Event, Origin, Store};
use engine::source::ByteSource;
use engine::{Error, Result};
use wasm_bindgen::JsValue;
use web_sys::File;

/// A model file from any of the places a load can read.
pub enum Source {
    Http(HttpSource),
    Blob(BlobSource),
}

impl ByteSource for Source {
    fn len(&self) -> u64 {
        match self {
            Source::Http(s) => s.len(),
            Source::Blob(s) => s.len(),
        }
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self {
            Source::Http(s) => s.read_at(offset, len).await,
            Source::Blob(s) => s.read_at(offset, len).await,
        }
    }

    fn name(&self) -> String {
        match self {
            Source::Http(s) => s.name(),
            Source::Blob(s) => s.name(),
        }
    }
}

impl Source {
    /// Lets go of what the source holds only for a load's speed (an OPFS file's lock); it still reads after this.
    pub fn release(&self) {
        if let Source::Blob(s) = self {
            s.release();
        }
    }
}

/// What to load.
pub enum Target {
    Url(String),
    Files(Vec<File>),
}

/// Opens the model's source (downloading it into storage when needed, with `Stage::Download` progress) and parses
/// its header and tensor index, which checks that it is a GGUF of an architecture the engine runs with every
/// tensor inside the file. A stored copy that fails is deleted: what cannot be opened as a model is not kept (nor
/// listed) as one. A download that does not start as a GGUF stops at its first bytes.
pub async fn open_model(
    target: Target,
    cancelled: CancelCheck,
    progress: &dyn Fn(u64, u64),
) -> Result<(ModelFiles<Source>, Origin)> {
    match target {
        Target::Url(url) => {
            let (source, origin) = open_url(&url, Kind::GgufModel, cancelled, progress).await?;
            match ModelFiles::from_gguf(source).await {
                Ok(files) => Ok((files, origin)),
                Err(e) => {
                    let stored = matches!(origin, Origin::Network { .. } | Origin::Cache { .. });
                    // A cancel says nothing about the file.
                    if stored && !matches!(e, Error::Cancelled) {
                        forget(&url).await;
                    }
                    Err(e)
                }
            }
        }
        Target::Files(files) => Ok((open_files(files, cancelled).await?, Origin::Local)),
    }
}

/// A LoRA adapter's file by URL, kept in storage as models are (and listed with them), read whole: adapters are
/// small, and the engine parses them from bytes. Not cancellable: a Stop or a new model waits for it, which the
/// size cap keeps short.
pub async fn read_adapter_file(url: &str) -> Result<Vec<u8>> {
    let never: CancelCheck = std::rc::Rc::new(|| false);
    let (source, _) = open_url(url, Kind::Adapter, never, &|_, _| {}).await?;
    let max = engine::lora::MAX_ADAPTER_BYTES;
    if source.len() > max {
        return Err(Error::Adapter(format!("{url} is {} bytes, more than the {max} an adapter may have", source.len())));
    }
    source.read_at(0, source.len() as usize).await
}

async fn open_url(
    url: &str,
    kind: Kind,
    cancelled: CancelCheck,
    progress: &dyn Fn(u64, u64),
) -> Result<(Source, Origin)> {
    let url = absolute_url(url);
    let blob = |b: BlobSource| Source::Blob(b);
    let opfs_problem = match Opfs::open().await {
        Ok(opfs) => {
            let source = |record: &Record, file, sync: Option<JsValue>| {
                let source = Opfs::source(record, file, cancelled.clone());
                blob(match sync {
                    Some(handle) => source.with_sync_handle(handle),
                    None => source,
                })
            };
            if let Some((record, file)) = opfs.lookup(&url).await {
                let sync = opfs.sync_handle(&record.file).await;
                return Ok((source(&record, file, sync), Origin::Cache { store: Store::Opfs }));
            }
            match opfs.download_kind(&url, kind, &cancelled, progress).await {
                Ok((record, file)) => {
                    let sync = opfs.sync_handle(&record.file).await;
                    return Ok((source(&record, file, sync), Origin::Network { store: Store::Opfs }));
                }
                Err(StoreError::Other(e)) => return Err(e),
                Err(StoreError::Storage(why)) => why,
            }
        }
        Err(why) => why,
    };
    let cache_problem = match CacheStore::open().await {
        Ok(cache) => {
            if let Some(b) = cache.lookup(&url).await {
                return Ok((
                    blob(CacheStore::source(&url, b, cancelled)),
                    Origin::Cache { store: Store::CacheStorage },
                ));
            }
            match cache.download_kind(&url, kind, &cancelled, progress).await {
                Ok(b) => {
                    return Ok((
                        blob(CacheStore::source(&url, b, cancelled)),
                        Origin::Network { store: Store::CacheStorage },
                    ));
                }
                Err(StoreError::Other(e)) => return Err(e),
                Err(StoreError::Storage(why)) => why,
            }
        }
        Err(why) => why,
    };
    let reason = format!("{opfs_problem}; {cache_problem}");
    web_sys::console::warn_1(&format!("aviary: not caching {url}: {reason}").into());
    Ok((Source::Http(HttpSource::open(&url, cancelled).await?), Origin::Streamed { reason }))
}

/// A file's path inside the folder the user picked ("model/config.json" → "config.json"), or its name.
fn relative_name(file: &File) -> String {
    let path = js_sys::Reflect::get(file, &"webkitRelativePath".into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| file.name());
    path.rsplit('/').next().unwrap_or(&path).to_string()
}

/// One `.gguf`, or a Hugging Face folder: config.json, tokenizer.json (tokenizer_config.json), the safetensors
/// shards in the order model.safetensors.index.json gives (or the one file).
pub async fn open_files(files: Vec<File>, cancelled: CancelCheck) -> Result<ModelFiles<Source>> {
    if files.is_empty() {
        return Err(Error::InvalidArgument("no files were picked".into()));
    }
    let named: Vec<(String, File)> = files.into_iter().map(|f| (relative_name(&f), f)).collect();
    let ggufs: Vec<&(String, File)> = named.iter().filter(|(n, _)| n.to_lowercase().ends_with(".gguf")).collect();
    let source = |f: &File| BlobSource::new(f.clone().into(), f.name()).with_cancel(cancelled.clone());
    if let [(_, f)] = ggufs.as_slice() {
        return ModelFiles::from_gguf(Source::Blob(source(f))).await;
    }
    if ggufs.len() > 1 {
        return Err(Error::InvalidArgument(format!(
            "pick one .gguf file, not {} ({})",
            ggufs.len(),
            ggufs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let find = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, f)| f);
    let read = |name: &'static str| {
        let f = find(name).cloned();
        let source = f.as_ref().map(&source);
        async move {
            match source {
                Some(s) => s.read_all().await.map(Some),
                None => Ok(None),
            }
        }
    };
    let shard_names: Vec<String> = match read("model.safetensors.index.json").await? {
        Some(index) => safetensors::parse_index(&index)?.shards,
        None => {
            let mut names: Vec<String> = named.iter().map(|(n, _)| n.clone()).filter(|n| n.ends_with(".safetensors")).collect();
            names.sort();
            names.dedup();
            names
        }
    };
    if shard_names.is_empty() {
        return Err(Error::InvalidArgument(
            "these files hold no model: pick a .gguf file, or a folder with config.json, tokenizer.json and *.safetensors"
                .into(),
        ));
    }
    let config = read("config.json").await?.ok_or_else(|| {
        Error::Config("the folder has no config.json (a Hugging Face model folder needs it beside the *.safetensors)".into())
    })?;
    let tokenizer = read("tokenizer.json").await?.ok_or_else(|| {
        Error::Tokenizer("the folder has no tokenizer.json, so the model cannot chat; add the model's tokenizer.json".into())
    })?;
    let tokenizer_config = read("tokenizer_config.json").await?;
    let mut shards = Vec::new();
    for name in &shard_names {
        let f = find(name).ok_or_else(|| io(format!("the folder lacks {name}, which model.safetensors.index.json names")))?;
        shards.push(Source::Blob(source(f)));
    }
    let generation_config = read("generation_config.json").await?;
    let mut files = ModelFiles::from_hf(shards, &config, Some(&tokenizer), tokenizer_config.as_deref()).await?;
    if let Some(g) = generation_config {
        files.set_generation_config(&g);
    }
    Ok(files)
}

/// The models in storage, as `Event::Cache`.
pub async fn list() -> Event {
    match Opfs::open().await {
        Ok(opfs) => Event::Cache { entries: opfs.entries().await, store: Some(Store::Opfs), note: None },
        Err(opfs_problem) => match CacheStore::open().await {
            Ok(cache) => Event::Cache {
                entries: cache.entries().await,
                store: Some(Store::CacheStorage),
                note: Some(opfs_problem),
            },
            Err(cache_problem) => Event::Cache {
                entries: Vec::<CacheEntry>::new(),
                store: None,
                note: Some(format!("models are not kept between visits: {opfs_problem}; {cache_problem}")),
            },
        },
    }
}

/// Deletes `url`'s copy wherever it is kept, then lists what is left.
pub async fn delete(url: &str) -> Event {
    forget(url).await;
    list().await
}

/// Deletes `url`'s copy wherever it is kept.
async fn forget(url: &str) {
    let url = absolute_url(url);
    if let Ok(opfs) = Opfs::open().await {
        opfs.forget(&url).await;
    }
    if let Ok(cache) = CacheStore::open().await {
        cache.forget(&url).await;
    }
}
