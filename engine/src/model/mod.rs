//! From model files to a runnable `Transformer`: find each weight under its GGUF or HF name, stream its bytes from
//! the source, resolve the norm convention, and hand it to the backend in its file quantization.

pub mod transformer;

use crate::backend::{AttentionParams, Backend, Projections, WeightBytes};
use crate::chat::ChatTemplate;
use crate::config::{Arch, Config};
use crate::format::{gguf, safetensors, Metadata, TensorInfo};
use crate::quant::{dequantize_to_vec, GgmlType};
use crate::sampling::SamplingParams;
use crate::source::ByteSource;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::collections::BTreeMap;
pub use transformer::{Cache, Layer, Transformer};

/// How the file names its tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// `blk.N.attn_q.weight`, `token_embd.weight`, …
    Gguf,
    /// `model.layers.N.self_attn.q_proj.weight`, … under a prefix (`model.` or `language_model.model.`).
    Hf { prefix: String },
}

/// The weights of one layer, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QNorm,
    KNorm,
    PostAttnNorm,
    FfnNorm,
    PostFfnNorm,
    Gate,
    Up,
    Down,
}

impl Naming {
    fn layer(&self, arch: Arch, i: usize, role: Role) -> String {
        match self {
            Naming::Gguf => {
                let r = match role {
                    Role::AttnNorm => "attn_norm",
                    Role::Q => "attn_q",
                    Role::K => "attn_k",
                    Role::V => "attn_v",
                    Role::O => "attn_output",
                    Role::QNorm => "attn_q_norm",
                    Role::KNorm => "attn_k_norm",
                    Role::PostAttnNorm => "post_attention_norm",
                    Role::FfnNorm => "ffn_norm",
                    Role::PostFfnNorm => "post_ffw_norm",
                    Role::Gate => "ffn_gate",
                    Role::Up => "ffn_up",
                    Role::Down => "ffn_down",
                };
                format!("blk.{i}.{r}.weight")
            }
            Naming::Hf { prefix } => {
                let r = match role {
                    Role::AttnNorm => "input_layernorm",
                    Role::Q => "self_attn.q_proj",
                    Role::K => "self_attn.k_proj",
                    Role::V => "self_attn.v_proj",
                    Role::O => "self_attn.o_proj",
                    Role::QNorm => "self_attn.q_norm",
                    Role::KNorm => "self_attn.k_norm",
                    // In HF Llama `post_attention_layernorm` is the pre-MLP norm; in Gemma it normalises the
                    // attention output and `pre_feedforward_layernorm` is the pre-MLP norm.
                    Role::PostAttnNorm => "post_attention_layernorm",
                    Role::FfnNorm if arch == Arch::Llama => "post_attention_layernorm",
                    Role::FfnNorm => "pre_feedforward_layernorm",
                    Role::PostFfnNorm => "post_feedforward_layernorm",
                    Role::Gate => "mlp.gate_proj",
                    Role::Up => "mlp.up_proj",
                    Role::Down => "mlp.down_proj",
                };
                format!("{prefix}layers.{i}.{r}.weight")
            }
        }
    }

    fn embed(&self) -> String {
        match self {
            Naming::Gguf => "token_embd.weight".into(),
            Naming::Hf { prefix } => format!("{prefix}embed_tokens.weight"),
        }
    }

    fn final_norm(&self) -> String {
        match self {
            Naming::Gguf => "output_norm.weight".into(),
            Naming::Hf { prefix } => format!("{prefix}norm.weight"),
        }
    }

    fn lm_head(&self) -> String {
        match self {
            Naming::Gguf => "output.weight".into(),
            Naming::Hf { prefix } => format!(
                "{}lm_head.weight",
                prefix.strip_suffix("model.").unwrap_or(prefix)
            ),
        }
    }
}

/// A model's files, parsed but not loaded: enough to describe it and to stream its weights.
pub struct ModelFiles<S> {
    pub sources: Vec<S>,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub naming: Naming,
    pub config: Config,
    /// GGUF metadata (empty for safetensors models).
    pub metadata: Metadata,
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    /// The model's own sampling defaults, when its files name any (see [`SamplingParams::from_gguf`] and
    /// [`ModelFiles::set_generation_config`]).
    pub sampling: Option<SamplingParams>,
}

impl<S: ByteSource> ModelFiles<S> {
    /// A single GGUF file: config, tokenizer and chat template all come from its metadata.
    pub async fn from_gguf(source: S) -> Result<Self> {
        let file = gguf::read_gguf(&source).await?;
        let mut config = Config::from_gguf(&file.metadata)?;
        config.tie_word_embeddings = file.tensor("output.weight").is_none();
        let tokenizer = if file.metadata.contains_key("tokenizer.ggml.tokens") {
            Some(Tokenizer::from_gguf(&file.metadata)?)
        } else {
            None
        };
        let chat_template = ChatTemplate::from_gguf(&file.metadata)?;
        let sampling = SamplingParams::from_gguf(&file.metadata);
        let mut metadata = file.metadata;
        // The vocabulary arrays (~10⁵ strings) now live in the tokenizer: freed before the weights stream in, they
        // are not part of the load's peak memory (the browser worker's wasm memory never shrinks).
        metadata.retain(|k, _| !k.starts_with("tokenizer.ggml.") || k == "tokenizer.ggml.model");
        let tensors = file
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        Ok(Self {
            sources: vec![source],
            tensors,
            naming: Naming::Gguf,
            config,
            metadata,
            tokenizer,
            chat_template,
            sampling,
        })
    }

    /// A Hugging Face checkpoint: one source per safetensors shard (in the order the index lists them), plus the
    /// small JSON files.
    pub async fn from_hf(
        shards: Vec<S>,
        config_json: &[u8],
        tokenizer_json: Option<&[u8]>,
        tokenizer_config_json: Option<&[u8]>,
    ) -> Result<Self> {
        let parse = |bytes: &[u8], what: &str| -> Result<serde_json::Value> {
            serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
                format: crate::error::Format::Json,
                detail: format!("{what}: {e}"),
            })
        };
        let config_value = parse(config_json, "config.json")?;
        let mut config = Config::from_hf_json(&config_value)?;
        let mut tensors = BTreeMap::new();
        for (i, src) in shards.iter().enumerate() {
            let file = safetensors::read_safetensors(src, i).await?;
            for t in file.tensors {
                if tensors.insert(t.name.clone(), t).is_some() {
                    return Err(Error::Malformed {
                        format: crate::error::Format::Safetensors,
                        detail: "a tensor appears in two shards".into(),
                    });
                }
            }
        }
        let prefix = ["model.", "language_model.model.", "model.language_model."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| Error::MissingTensor("model.embed_tokens.weight".into()))?;
        let naming = Naming::Hf {
            prefix: prefix.to_string(),
        };
        if !tensors.contains_key(&naming.lm_head()) {
            config.tie_word_embeddings = true;
        }
        let tokenizer_config = tokenizer_config_json
            .map(|b| parse(b, "tokenizer_config.json"))
            .transpose()?;
        let tokenizer = tokenizer_json
            .map(|t| Tokenizer::from_json(t, tokenizer_config.as_ref()))
            .transpose()?;
        let chat_template = match &tokenizer_config {
            Some(cfg) => ChatTemplate::from_tokenizer_config(cfg)?,
            None => None,
        };
        Ok(Self {
            sources: shards,
            tensors,
            naming,
            config,
            metadata: Metadata::new(),
            tokenizer,
            chat_template,
            sampling: None,
        })
    }

    /// Reads an HF folder's generation_config.json (optional; a malformed one is ignored, it only holds defaults).
    pub fn set_generation_config(&mut self, json: &[u8]) {
        self.sampling = serde_json::from_slice(json)
            .ok()
            .and_then(|v| SamplingParams::from_generation_config(&v));
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// Total bytes of weights the loader will read.
    pub fn weight_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.len).sum()
    }

    /// Weight bytes one decode step reads: every matrix once, the embedding table only as the LM head (its gather
    /// reads one row) — the numerator of a memory roofline.
    pub fn weight_bytes_per_token(&self) -> u64 {
        let embed = self.tensors.get(&self.naming.embed()).map_or(0, |t| t.len);
        let tied = self.config.tie_word_embeddings;
        self.weight_bytes() - if tied { 0 } else { embed }
    }

    async fn read(&self, info: &TensorInfo) -> Result<Vec<u8>> {
        let src = self
            .sources
            .get(info.shard)
            .ok_or_else(|| Error::MissingTensor(info.name.clone()))?;
        let len = usize::try_from(info.len)
            .map_err(|_| Error::Unsupported(format!("tensor `{}` is too large", info.name)))?;
        src.read_at(info.offset, len).await
    }

    async fn vector(&self, name: &str, len: usize, offset: f32) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.elements() != len {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: vec![len],
                actual: info.shape.clone(),
            });
        }
        let bytes = self.read(info).await?;
        let mut v = dequantize_to_vec(info.dtype, &bytes, len)?;
        v.iter_mut().for_each(|x| *x += offset);
        Ok(v)
    }

    /// Refuses a model `backend` cannot hold, before a byte is uploaded (a host may ask before it makes room).
    pub fn check_capacity<B: Backend>(&self, backend: &B) -> Result<()> {
        let matrices: Vec<(&str, GgmlType, [usize; 2])> = self
            .tensors
            .values()
            .filter(|t| t.shape.len() == 2)
            .map(|t| (t.name.as_str(), t.dtype, [t.shape[0], t.shape[1]]))
            .collect();
        backend.check_capacity(&matrices, self.weight_bytes())
    }

    /// Streams every weight to `backend`. `progress(done_bytes, total_bytes)` is called after each tensor.
    pub async fn load<B: Backend>(
        &self,
        backend: &B,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Transformer<B>> {
        let cfg = &self.config;
        let total = self.weight_bytes();
        self.check_capacity(backend)?;
        let mut done = 0u64;
        let mut tick = |info: &TensorInfo| {
            done += info.len;
            progress(done, total);
        };

        let matrix_bytes = |name: String, rows: usize, cols: usize| async move {
            let info = self.info(&name)?;
            if info.shape != [rows, cols] {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: vec![rows, cols],
                    actual: info.shape.clone(),
                });
            }
            let bytes = self.read(info).await?;
            Ok::<_, Error>((name, info, bytes))
        };
        let matrix = |name: String, rows: usize, cols: usize| async move {
            let (name, info, bytes) = matrix_bytes(name, rows, cols).await?;
            let w = backend.upload_weight(&name, info.dtype, [rows, cols], &bytes)?;
            Ok::<_, Error>((w, info))
        };
        // Weights that multiply the same activations; `packable` lets the backend fuse them into one product.
        let projections = |parts: Vec<(String, usize, usize)>, packable: bool| async move {
            let mut read = Vec::with_capacity(parts.len());
            for (name, rows, cols) in parts {
                read.push(matrix_bytes(name, rows, cols).await?);
            }
            let bytes: Vec<WeightBytes> = read
                .iter()
                .map(|(name, info, bytes)| {
                    (
                        name.as_str(),
                        info.dtype,
                        [info.shape[0], info.shape[1]],
                        bytes.as_slice(),
                    )
                })
                .collect();
            let p = if packable {
                backend.upload_projections(&bytes)?
            } else {
                let weights = bytes
                    .iter()
                    .map(|&(name, dtype, shape, b)| backend.upload_weight(name, dtype, shape, b));
                Projections::Apart(weights.collect::<Result<_>>()?)
            };
            Ok::<_, Error>((
                p,
                read.into_iter()
                    .map(|(_, info, _)| info)
                    .collect::<Vec<_>>(),
            ))
        };
        let norm = |name: String, len: usize| async move {
            let v = self.vector(&name, len, cfg.norm_weight_offset).await?;
            let info = self.info(&name)?;
            Ok::<_, Error>((backend.upload_vector(&v)?, info))
        };

        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let (q_rows, kv_rows) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let (embed, info) = matrix(self.naming.embed(), cfg.vocab_size, h).await?;
        tick(info);

        // llama3 rope scaling arrives in GGUF as per-frequency divisors.
        let freq_factors = match self.naming {
            Naming::Gguf if self.tensors.contains_key("rope_freqs.weight") => {
                Some(self.vector("rope_freqs.weight", hd / 2, 0.0).await?)
            }
            _ => None,
        };
        let mut bases: Vec<u64> = Vec::new();
        let mut ropes = Vec::new();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let name = |r| self.naming.layer(cfg.arch, i, r);
            let base = cfg.rope_base(i);
            let rope = match bases.iter().position(|&b| b == base.to_bits()) {
                Some(r) => r,
                None => {
                    let mut inv = cfg.inv_freq(i);
                    if let Some(ff) = &freq_factors {
                        inv.iter_mut().zip(ff).for_each(|(f, d)| *f /= d);
                    }
                    ropes.push(backend.rope_table(&inv, cfg.rope_layout)?);
                    bases.push(base.to_bits());
                    ropes.len() - 1
                }
            };
            let mut take_norm = |t: (B::Tensor, &TensorInfo)| {
                tick(t.1);
                t.0
            };
            let attn_norm = take_norm(norm(name(Role::AttnNorm), h).await?);
            let (q_norm, k_norm) = if cfg.has_qk_norm() {
                (
                    Some(take_norm(norm(name(Role::QNorm), hd).await?)),
                    Some(take_norm(norm(name(Role::KNorm), hd).await?)),
                )
            } else {
                (None, None)
            };
            let ffn_norm = take_norm(norm(name(Role::FfnNorm), h).await?);
            let (post_attn_norm, post_ffn_norm) = if cfg.has_post_norms() {
                (
                    Some(take_norm(norm(name(Role::PostAttnNorm), h).await?)),
                    Some(take_norm(norm(name(Role::PostFfnNorm), h).await?)),
                )
            } else {
                (None, None)
            };
            let f = cfg.intermediate_size;
            // QK-norm reads q and k apart, so only models without it get q, k and v in one product.
            let qkv_parts = vec![
                (name(Role::Q), q_rows, h),
                (name(Role::K), kv_rows, h),
                (name(Role::V), kv_rows, h),
            ];
            let (qkv, infos) = projections(qkv_parts, !cfg.has_qk_norm()).await?;
            infos.into_iter().for_each(&mut tick);
            let (gate_up, infos) =
                projections(vec![(name(Role::Gate), f, h), (name(Role::Up), f, h)], true).await?;
            infos.into_iter().for_each(&mut tick);
            let mut take = |t: (B::Weight, &TensorInfo)| {
                tick(t.1);
                t.0
            };
            layers.push(Layer {
                attn_norm,
                qkv,
                o: take(matrix(name(Role::O), h, q_rows).await?),
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm,
                post_ffn_norm,
                gate_up,
                down: take(matrix(name(Role::Down), h, f).await?),
                attention: AttentionParams {
                    n_heads: cfg.num_attention_heads,
                    n_kv_heads: cfg.num_key_value_heads,
                    head_dim: hd,
                    scale: cfg.attention_scale(),
                    softcap: cfg.attn_logit_softcapping.map(|c| c as f32),
                    window: cfg.layer_windows[i],
                },
                rope,
            });
        }
        let final_norm_name = self.naming.final_norm();
        let final_norm = backend.upload_vector(
            &self
                .vector(&final_norm_name, h, cfg.norm_weight_offset)
                .await?,
        )?;
        tick(self.info(&final_norm_name)?);
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            let (w, info) = matrix(self.naming.lm_head(), cfg.vocab_size, h).await?;
            tick(info);
            Some(w)
        };
        Ok(Transformer {
            config: cfg.clone(),
            embed,
            layers,
            final_norm,
            lm_head,
            ropes,
        })
    }

    /// The mix of weight types, largest share first (for model cards and logs).
    pub fn quantization_mix(&self) -> Vec<(GgmlType, u64)> {
        let mut by: BTreeMap<u32, (GgmlType, u64)> = BTreeMap::new();
        for t in self.tensors.values() {
            by.entry(t.dtype.id()).or_insert((t.dtype, 0)).1 += t.len;
        }
        let mut v: Vec<_> = by.into_values().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }

    /// Parameter count (elements of every tensor).
    pub fn parameters(&self) -> u64 {
        self.tensors.values().map(|t| t.elements() as u64).sum()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::ModelFiles;
    use crate::format::safetensors;
    use crate::source::FileSource;
    use crate::{Error, Result};
    use std::path::Path;

    impl ModelFiles<FileSource> {
        /// A `.gguf` file, or a directory with config.json + *.safetensors (+ tokenizer.json, tokenizer_config.json).
        pub fn open(path: impl AsRef<Path>) -> Result<Self> {
            let path = path.as_ref();
            if path.is_dir() {
                let read_opt = |name: &str| -> Result<Option<Vec<u8>>> {
                    let p = path.join(name);
                    if p.exists() {
                        Ok(Some(std::fs::read(p)?))
                    } else {
                        Ok(None)
                    }
                };
                let config = read_opt("config.json")?.ok_or_else(|| {
                    Error::Config(format!("{} has no config.json", path.display()))
                })?;
                let shard_names = match read_opt("model.safetensors.index.json")? {
                    Some(index) => safetensors::parse_index(&index)?.shards,
                    None => {
                        let mut names: Vec<String> = std::fs::read_dir(path)?
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.ends_with(".safetensors"))
                            .collect();
                        names.sort();
                        names
                    }
                };
                if shard_names.is_empty() {
                    return Err(Error::Config(format!(
                        "{} has no .safetensors files",
                        path.display()
                    )));
                }
                let shards = shard_names
                    .iter()
                    .map(|n| FileSource::open(path.join(n)))
                    .collect::<Result<Vec<_>>>()?;
                let tokenizer = read_opt("tokenizer.json")?;
                let tokenizer_config = read_opt("tokenizer_config.json")?;
                let mut files = futures::executor::block_on(ModelFiles::from_hf(
                    shards,
                    &config,
                    tokenizer.as_deref(),
                    tokenizer_config.as_deref(),
                ))?;
                if let Some(g) = read_opt("generation_config.json")? {
                    files.set_generation_config(&g);
                }
                Ok(files)
            } else {
                futures::executor::block_on(ModelFiles::from_gguf(FileSource::open(path)?))
            }
        }
    }
}

/// Opening files that are not whole models: each fails while its header is read (before a weight is), with an
/// error whose words say what the file is.
#[cfg(test)]
mod open_tests {
    use super::ModelFiles;
    use crate::error::{describe_load_error, Format};
    use crate::source::MemorySource;
    use crate::Error;

    fn tiny() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny/llama/model-q8_0.gguf"
        );
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn open(bytes: &[u8]) -> crate::Result<ModelFiles<MemorySource>> {
        let source = MemorySource {
            name: "m.gguf".into(),
            bytes: bytes.to_vec(),
        };
        futures::executor::block_on(ModelFiles::from_gguf(source))
    }

    fn failure(bytes: &[u8]) -> Error {
        match open(bytes) {
            Ok(_) => panic!("opened {} bytes as a model", bytes.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn the_whole_file_opens() {
        let files = open(&tiny()).unwrap();
        assert!(files.tokenizer.is_some() && !files.tensors.is_empty());
    }

    #[test]
    fn a_truncated_gguf_fails_naming_how_much_its_tensors_need() {
        let bytes = tiny();
        let cut = bytes.len() * 6 / 10;
        let e = failure(&bytes[..cut]);
        let furthest = open(&bytes)
            .unwrap()
            .tensors
            .values()
            .map(|t| t.offset + t.len)
            .max()
            .unwrap();
        match &e {
            Error::Incomplete {
                format: Format::Gguf,
                len,
                needed,
                ..
            } => {
                assert_eq!((*len, *needed), (cut as u64, furthest));
            }
            other => panic!("{other:?}"),
        }
        let words = describe_load_error(&e);
        let expected = format!(
            "This file is incomplete: it ends at {} of the {} bytes its tensor index needs — download it again",
            grouped(cut as u64),
            grouped(furthest)
        );
        assert_eq!(words.summary, expected);
        assert!(words.detail.unwrap().contains("GGUF file is incomplete"));
    }

    fn grouped(n: u64) -> String {
        let s = n.to_string();
        let (head, rest) = s.split_at(s.len() % 3);
        let groups: Vec<&str> = rest
            .as_bytes()
            .chunks(3)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        [head]
            .into_iter()
            .chain(groups)
            .filter(|g| !g.is_empty())
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn a_header_only_gguf_is_incomplete_not_a_model_without_weights() {
        let bytes = tiny();
        let data_offset =
            futures::executor::block_on(crate::format::gguf::read_gguf(&MemorySource {
                name: "m.gguf".into(),
                bytes: bytes.clone(),
            }))
            .unwrap()
            .data_offset as usize;
        let e = failure(&bytes[..data_offset]);
        assert!(
            matches!(e, Error::Incomplete { len, .. } if len == data_offset as u64),
            "{e:?}"
        );
        // Cut inside the header itself: the header is what is missing.
        let e = failure(&bytes[..data_offset / 2]);
        assert!(matches!(e, Error::Truncated { .. }), "{e:?}");
        assert!(describe_load_error(&e)
            .summary
            .contains("inside its header"));
    }

    #[test]
    fn an_html_page_is_named_as_one() {
        let page = b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Aviary</title></head></html>\n";
        let e = failure(page);
        assert!(
            matches!(&e, Error::NotGguf { head } if head.len() == crate::error::HEAD_BYTES),
            "{e:?}"
        );
        let words = describe_load_error(&e);
        assert_eq!(
            words.summary,
            "This file is not a GGUF model (it looks like an HTML page)"
        );
        assert_eq!(
            words.detail.as_deref(),
            Some("malformed GGUF file: bad magic [3c, 21, 44, 4f], expected \"GGUF\"")
        );
    }

    #[test]
    fn a_json_file_is_named_as_one() {
        let e = failure(b"  {\"error\": \"Repository not found\"}");
        assert_eq!(
            describe_load_error(&e).summary,
            "This file is not a GGUF model (it looks like a JSON file)"
        );
        assert_eq!(
            describe_load_error(&failure(b"")).summary,
            "This file is empty"
        );
    }

    #[test]
    fn an_unknown_architecture_is_named() {
        let mut bytes = tiny();
        let key = b"general.architecture";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        // The value follows the key: its type (u32), its length (u64), then "llama".
        let value = at + 4 + 8;
        assert_eq!(&bytes[value..value + 5], b"llama");
        bytes[value..value + 5].copy_from_slice(b"mamba");
        let e = failure(&bytes);
        assert!(
            matches!(&e, Error::UnsupportedArchitecture(a) if a == "mamba"),
            "{e:?}"
        );
        let summary = describe_load_error(&e).summary;
        assert!(
            summary.contains("mamba") && summary.contains("Llama"),
            "{summary}"
        );
    }
}
