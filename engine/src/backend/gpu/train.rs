//! Training's ops on the GPU (see [`crate::train::TrainBackend`]): each op is one of the train_* launchers beside its
//! WGSL in shaders/, held to the CPU twin (backend/cpu/train.rs) by engine/tests/gpu_train_ops.rs. Like inference's
//! ops they only record work; the pass submits when it reads a loss or a gradient back.

use super::{
    train_attention, train_loss, train_matmul, train_mm, train_norm, train_ops, train_rope,
};
use super::{GpuBackend, GpuRope, GpuTensor, GpuWeight};
use crate::backend::{AttentionParams, Backend};
use crate::config::Activation;
use crate::train::TrainBackend;
use crate::{Error, Result};

impl TrainBackend for GpuBackend {
    fn tensor(&self, rows: usize, cols: usize, values: &[f32]) -> Result<GpuTensor> {
        self.tensor_from_host(values, rows, cols)
    }

    async fn read(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        Ok(self.to_host(x).await?.concat())
    }

    async fn read_all(&self, xs: &[&GpuTensor]) -> Result<Vec<Vec<f32>>> {
        // Dense tensors gathered into one buffer: one readback (one wait for the queue) for all of them.
        let total: usize = xs.iter().map(|x| x.rows * x.cols).sum();
        if total == 0 || total * 4 > self.max_tensor_bytes() || xs.iter().any(|x| !x.is_dense()) {
            let mut out = Vec::with_capacity(xs.len());
            for x in xs {
                out.push(self.read(x).await?);
            }
            return Ok(out);
        }
        let all = GpuBackend::tensor(self, total, 1);
        let mut at = 0usize;
        for x in xs {
            let (buf, layout) = x.window();
            let n = x.rows * x.cols;
            self.rec.copy(buf, layout.offset as u64 * 4, all.buf(), (at * 4) as u64, (n * 4) as u64);
            at += n;
        }
        let values = self.read(&all).await?;
        let mut out = Vec::with_capacity(xs.len());
        let mut at = 0usize;
        for x in xs {
            let n = x.rows * x.cols;
            out.push(values[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }

    fn matmul_f32(&self, x: &GpuTensor, w: &GpuWeight) -> Result<GpuTensor> {
        train_matmul::matmul_f32(self, x, w)
    }

    fn matmul_grad_x(&self, dy: &GpuTensor, w: &GpuWeight) -> Result<GpuTensor> {
        train_matmul::matmul_grad_x(self, dy, w)
    }

    fn mm(&self, a: &GpuTensor, b: &GpuTensor, a_t: bool, b_t: bool) -> Result<GpuTensor> {
        train_mm::mm(self, a, b, a_t, b_t)
    }

    fn add_scaled(&self, a: &GpuTensor, b: &GpuTensor, s: f32) -> Result<GpuTensor> {
        train_ops::add_scaled(self, a, b, s)
    }

    fn rows(&self, x: &GpuTensor, start: usize, n: usize) -> Result<GpuTensor> {
        if start + n > x.rows {
            return Err(Error::Backend(format!("rows {start}..{} of a tensor of {} rows", start + n, x.rows)));
        }
        let view = GpuTensor { slab: x.slab.clone(), rows: n, cols: x.cols, offset: x.offset + start * x.stride, stride: x.stride };
        self.concat_rows(&[view])
    }

    fn concat_cols(&self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        train_ops::concat_cols(self, parts)
    }

    fn gated_f32(&self, gate: &GpuTensor, up: &GpuTensor, act: Activation) -> Result<GpuTensor> {
        train_ops::gated(self, gate, up, act)
    }

    fn gated_backward(
        &self,
        gate: &GpuTensor,
        up: &GpuTensor,
        dy: &GpuTensor,
        act: Activation,
    ) -> Result<(GpuTensor, GpuTensor)> {
        train_ops::gated_backward(self, gate, up, dy, act)
    }

    fn rms_norm_backward(
        &self,
        x: &GpuTensor,
        weight: &GpuTensor,
        dy: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        train_norm::rms_norm_backward(self, x, weight, dy, eps)
    }

    fn rope_backward(&self, dy: &GpuTensor, rope: &GpuRope, heads: usize) -> Result<GpuTensor> {
        train_rope::rope_backward(self, dy, rope, heads)
    }

    fn attention_f32(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        p: &AttentionParams,
    ) -> Result<(GpuTensor, GpuTensor)> {
        train_attention::attention_f32(self, q, k, v, p)
    }

    fn attention_backward(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        out: &GpuTensor,
        lse: &GpuTensor,
        dout: &GpuTensor,
        p: &AttentionParams,
    ) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        train_attention::attention_backward(self, q, k, v, out, lse, dout, p)
    }

    fn softcap_backward(&self, y: &GpuTensor, dy: &GpuTensor, cap: f32) -> Result<GpuTensor> {
        train_ops::softcap_backward(self, y, dy, cap)
    }

    fn cross_entropy(
        &self,
        logits: &GpuTensor,
        targets: &[Option<u32>],
        weight: f32,
    ) -> Result<(GpuTensor, GpuTensor)> {
        train_loss::cross_entropy(self, logits, targets, weight)
    }
}
