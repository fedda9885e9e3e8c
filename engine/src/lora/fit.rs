//! An adapter file fitted to one loaded model: shapes checked against the model, q/k rows put in the model's rope
//! layout, the file's scale folded into B, and each group of projections laid out as the base keeps it — one
//! low-rank pair per weight, or for a packed q·k·v (gate·up) product one pair over all of it: A stacked, B
//! block-diagonal, so the adapter adds one low-rank update to the packed output instead of one per part.

use super::{LoraFile, LoraInfo, LoraStack, LowRankF32, Target};
use crate::backend::{Backend, Projections};
use crate::config::{Arch, Config, RopeLayout};
use crate::model::Transformer;
use crate::quant::GgmlType;
use crate::{Error, Result};

/// A low-rank pair on the backend: A `[r, in]` and B transposed, `[r, out]`, with the file's scale already in it.
pub struct LowRank<W> {
    pub a: W,
    pub b_t: W,
}

/// An adapter's part in one group of projections that read the same input, in the base's layout.
pub enum Group<W> {
    /// One optional pair per weight of `Projections::Apart`.
    Apart(Vec<Option<LowRank<W>>>),
    /// One pair for the whole product of `Projections::Packed` (None when no part is decorated).
    Packed(Option<LowRank<W>>),
}

/// Which group of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupId {
    Qkv,
    O,
    GateUp,
    Down,
}

pub struct LayerLora<W> {
    pub qkv: Group<W>,
    pub o: Group<W>,
    pub gate_up: Group<W>,
    pub down: Group<W>,
}

impl<W> LayerLora<W> {
    fn group(&self, id: GroupId) -> &Group<W> {
        match id {
            GroupId::Qkv => &self.qkv,
            GroupId::O => &self.o,
            GroupId::GateUp => &self.gate_up,
            GroupId::Down => &self.down,
        }
    }
}

/// An adapter ready to run on one model.
pub struct Adapter<B: Backend> {
    /// Unique in the process: what a [`LoraStack`] key names.
    pub id: u64,
    pub name: String,
    pub info: LoraInfo,
    pub layers: Vec<LayerLora<B::Weight>>,
}

/// (in, out) of a target's weight.
pub(super) fn dims(c: &Config, t: Target) -> (usize, usize) {
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
    match t {
        Target::Q => (h, q),
        Target::K | Target::V => (h, kv),
        Target::O => (q, h),
        Target::Gate | Target::Up => (h, f),
        Target::Down => (f, h),
    }
}

/// B's rows of a q or k projection moved between rope layouts: within each head, adjacent-pair row 2i + j is
/// split-halves row j·d/2 + i (llama.cpp's converter permutation, MODELS.md "RoPE layout in GGUF").
fn permute_rows(b: &[f32], rank: usize, head_dim: usize, to: RopeLayout) -> Vec<f32> {
    let mut out = vec![0f32; b.len()];
    let half = head_dim / 2;
    let rows = b.len() / rank.max(1);
    for head in 0..rows / head_dim.max(1) {
        for i in 0..half {
            for j in 0..2 {
                let adjacent = head * head_dim + 2 * i + j;
                let split = head * head_dim + j * half + i;
                let (from, into) = match to {
                    RopeLayout::Adjacent => (split, adjacent),
                    RopeLayout::SplitHalves => (adjacent, split),
                };
                out[into * rank..(into + 1) * rank].copy_from_slice(&b[from * rank..(from + 1) * rank]);
            }
        }
    }
    out
}

impl LoraFile {
    /// The same adapter with q's and k's B rows moved from one RoPE layout to the other (a llama GGUF base keeps
    /// llama.cpp's adjacent pairs, PEFT files HF's split halves; other architectures use split halves everywhere).
    pub fn qk_rows_moved(&self, c: &Config, from: RopeLayout, to: RopeLayout) -> LoraFile {
        let mut out = self.clone();
        if from != to && c.arch == Arch::Llama {
            for (&(_, t), m) in out.modules.iter_mut() {
                if matches!(t, Target::Q | Target::K) {
                    m.b = permute_rows(&m.b, m.rank, c.head_dim, to);
                }
            }
        }
        out
    }
}

fn upload<B: Backend>(backend: &B, name: &str, rows: usize, cols: usize, values: &[f32]) -> Result<B::Weight> {
    backend.upload_weight(name, GgmlType::F32, [rows, cols], bytemuck::cast_slice(values))
}

/// The pair for one weight, B transposed and scaled by the file's scale.
fn single<B: Backend>(backend: &B, m: &LowRankF32) -> Result<LowRank<B::Weight>> {
    let (rank, out) = (m.rank, m.out_features);
    let b_t: Vec<f32> = (0..rank * out).map(|i| m.b[(i % out) * rank + i / out] * m.scale).collect();
    Ok(LowRank {
        a: upload(backend, &m.name, rank, m.in_features, &m.a)?,
        b_t: upload(backend, &m.name, rank, out, &b_t)?,
    })
}

/// One pair for a packed product whose parts are `parts` (each its rows in the packed output, in order).
fn packed<B: Backend>(backend: &B, parts: &[(usize, Option<&LowRankF32>)]) -> Result<Option<LowRank<B::Weight>>> {
    let present: Vec<&LowRankF32> = parts.iter().filter_map(|p| p.1).collect();
    let Some(first) = present.first() else { return Ok(None) };
    let cols = first.in_features;
    let rank: usize = present.iter().map(|m| m.rank).sum();
    let rows: usize = parts.iter().map(|p| p.0).sum();
    let a: Vec<f32> = present.iter().flat_map(|m| m.a.iter().copied()).collect();
    // Bᵀ of the packed output: rank rows, each zero outside the part its adapter row belongs to.
    let mut b_t = vec![0f32; rank * rows];
    let (mut row0, mut col0) = (0, 0);
    for &(width, m) in parts {
        if let Some(m) = m {
            for r in 0..width {
                for j in 0..m.rank {
                    b_t[(col0 + j) * rows + row0 + r] = m.b[r * m.rank + j] * m.scale;
                }
            }
            col0 += m.rank;
        }
        row0 += width;
    }
    Ok(Some(LowRank {
        a: upload(backend, &first.name, rank, cols, &a)?,
        b_t: upload(backend, &first.name, rank, rows, &b_t)?,
    }))
}

fn group<B: Backend>(
    backend: &B,
    base: &Projections<B::Weight>,
    parts: &[(usize, Option<&LowRankF32>)],
) -> Result<Group<B::Weight>> {
    Ok(match base {
        Projections::Apart(_) => Group::Apart(
            parts
                .iter()
                .map(|p| p.1.map(|m| single(backend, m)).transpose())
                .collect::<Result<_>>()?,
        ),
        Projections::Packed { .. } => Group::Packed(packed(backend, parts)?),
    })
}

impl<B: Backend> Adapter<B> {
    /// Checks `file` against `model` and uploads it. Fails, naming the tensor, when it does not fit; the model is
    /// untouched either way.
    pub fn new(backend: &B, model: &Transformer<B>, file: &LoraFile, name: &str) -> Result<Self> {
        let c = &model.config;
        if let Some(arch) = &file.architecture {
            if arch != c.arch.name() {
                return Err(Error::Adapter(format!(
                    "this adapter was made for a {arch} model, and the loaded model is {}",
                    c.arch.name()
                )));
            }
        }
        let mut modules = file.modules.clone();
        for (&(layer, target), m) in modules.iter_mut() {
            if layer >= c.num_hidden_layers {
                return Err(Error::Adapter(format!(
                    "`{}` is for layer {layer}, and the model has {} layers",
                    m.name, c.num_hidden_layers
                )));
            }
            let (inputs, outputs) = dims(c, target);
            if (m.in_features, m.out_features) != (inputs, outputs) {
                return Err(Error::Adapter(format!(
                    "`{}` does not fit the model: its {} maps {} to {} values, the model's maps {inputs} to {outputs}",
                    m.name,
                    target.hf_name(),
                    m.in_features,
                    m.out_features
                )));
            }
            let qk = matches!(target, Target::Q | Target::K);
            if qk && c.arch == Arch::Llama && file.qk_rows() != c.rope_layout {
                m.b = permute_rows(&m.b, m.rank, c.head_dim, c.rope_layout);
            }
        }
        let get = |layer: usize, t: Target| {
            let m = modules.get(&(layer, t));
            (dims(c, t).1, m)
        };
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let single_group = |t: Target| -> Result<Group<B::Weight>> {
                    Ok(Group::Apart(vec![get(i, t).1.map(|m| single(backend, m)).transpose()?]))
                };
                Ok(LayerLora {
                    qkv: group(backend, &l.qkv, &[get(i, Target::Q), get(i, Target::K), get(i, Target::V)])?,
                    o: single_group(Target::O)?,
                    gate_up: group(backend, &l.gate_up, &[get(i, Target::Gate), get(i, Target::Up)])?,
                    down: single_group(Target::Down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            id: super::next_id(),
            name: name.to_string(),
            info: file.info(),
            layers,
        })
    }
}

impl<B: Backend> LoraStack<B> {
    /// `y`, the output of group `group` of layer `layer` for input `x` — part `part` of an apart group, or the whole
    /// packed product (`None`) — plus each active adapter's low-rank term for it.
    pub fn decorate(
        &self,
        b: &B,
        layer: usize,
        group: GroupId,
        part: Option<usize>,
        x: &B::Tensor,
        mut y: B::Tensor,
    ) -> Result<B::Tensor> {
        for (adapter, scale) in self.active() {
            let Some(l) = adapter.layers.get(layer) else {
                return Err(Error::Adapter(format!(
                    "adapter `{}` has no layer {layer}: it was fitted to another model",
                    adapter.name
                )));
            };
            let pair = match (l.group(group), part) {
                (Group::Apart(pairs), Some(j)) => pairs.get(j).and_then(Option::as_ref),
                (Group::Packed(pair), None) => pair.as_ref(),
                _ => {
                    return Err(Error::Adapter(format!(
                        "adapter `{}` was fitted to another model",
                        adapter.name
                    )))
                }
            };
            if let Some(p) = pair {
                y = b.add_low_rank(&y, x, &p.a, &p.b_t, scale)?;
            }
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_llama_cpp_and_inverts() {
        // Two heads of dim 4, rank 1: split-halves row h*4 + j*2 + i lands on adjacent row h*4 + 2i + j.
        let b: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let adjacent = permute_rows(&b, 1, 4, RopeLayout::Adjacent);
        assert_eq!(adjacent, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(permute_rows(&adjacent, 1, 4, RopeLayout::SplitHalves), b);
    }
}
