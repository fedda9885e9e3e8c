//! Weighted next-token cross-entropy and its gradient with respect to the logits (shaders/train_loss.wgsl).

use super::recorder::{grid, Access};
use super::{GpuBackend, GpuTensor};
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../../shaders/train_loss.wgsl");
/// A row that is not scored (NONE in train_loss.wgsl).
const NONE: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    weight: f32,
    targets_offset: u32,
}

/// (Σ over scored rows of weight · (lse − logit of the target) `[1, 1]`, d loss / d logits `[rows, vocab]`).
pub(crate) fn cross_entropy(
    g: &GpuBackend,
    logits: &GpuTensor,
    targets: &[Option<u32>],
    weight: f32,
) -> Result<(GpuTensor, GpuTensor)> {
    let (rows, vocab) = (logits.rows, logits.cols);
    if targets.len() != rows {
        return Err(Error::Backend(format!(
            "{} targets for {rows} rows of logits",
            targets.len()
        )));
    }
    if let Some(t) = targets.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!(
            "target token {t} is outside the vocabulary ({vocab})"
        )));
    }
    if vocab == 0 {
        return Err(Error::Backend(
            "cross-entropy over an empty vocabulary".into(),
        ));
    }
    let logits = super::train_ops::dense(g, logits)?;
    let (grad, loss_rows, loss) = (g.tensor(rows, vocab), g.tensor(rows, 1), g.tensor(1, 1));
    let ids: Vec<u32> = targets.iter().map(|t| t.unwrap_or(NONE)).collect();
    let (ids_buf, targets_offset) = g.rec.upload_u32(&ids)?;
    let params = Params {
        rows: rows as u32,
        vocab: vocab as u32,
        weight,
        targets_offset,
    };
    let access = [
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ];
    let bufs = [
        logits.buf(),
        &*ids_buf,
        grad.buf(),
        loss_rows.buf(),
        loss.buf(),
    ];
    let per_row = g
        .rec
        .kernel_entry("train_loss", SOURCE, "rows", &[], &access);
    g.rec.dispatch(
        &per_row,
        bytemuck::bytes_of(&params),
        &bufs,
        grid(rows as u32),
    )?;
    let total = g
        .rec
        .kernel_entry("train_loss", SOURCE, "total", &[], &access);
    // With no rows the per-row pass records nothing, and the sum of nothing is still written.
    g.rec
        .dispatch(&total, bytemuck::bytes_of(&params), &bufs, [1, 1, 1])?;
    Ok((loss, grad))
}
