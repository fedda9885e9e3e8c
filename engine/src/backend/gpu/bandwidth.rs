//! Device memory bandwidth, measured with our own copy kernel (shaders/copy.wgsl), for benchmarks.

use super::recorder::{grid, Access};
use super::GpuBackend;
use crate::{Error, Result};

const SOURCE: &str = include_str!("../../../../shaders/copy.wgsl");
const WORKGROUP: u64 = 256;
/// Bytes copied per iteration (less where the adapter binds less).
const BYTES: u64 = 256 << 20;
const ITERATIONS: u32 = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

use crate::session::default_clock as now_ms;

impl GpuBackend {
    /// Copy bandwidth in GB/s, (bytes read + bytes written) per second: a buffer of up to 256 MiB copied 8 times
    /// after a warm-up copy, timed from the first submit to the awaited readback of 16 bytes.
    ///
    /// Submits any work recorded before it, and forgets the cached bind groups afterwards (so the two buffers are
    /// freed); run it before a measured decode, not inside one.
    pub async fn copy_bandwidth_gbs(&self) -> Result<f64> {
        self.measure_copy_bandwidth(BYTES, ITERATIONS).await
    }

    /// `copy_bandwidth_gbs` with a chosen size (capped by the adapter's binding limit) and iteration count.
    pub(crate) async fn measure_copy_bandwidth(&self, bytes: u64, iterations: u32) -> Result<f64> {
        let ctx = &self.rec.ctx;
        let bytes = bytes.min(ctx.max_binding).min(ctx.max_buffer) / 16 * 16;
        if bytes == 0 || iterations == 0 {
            return Err(Error::InvalidArgument(
                "a bandwidth measurement needs bytes and iterations".into(),
            ));
        }
        let n = bytes / 16;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let src = self
            .rec
            .pool
            .create(&ctx.device, bytes, usage, "bandwidth source");
        let dst = self
            .rec
            .pool
            .create(&ctx.device, bytes, usage, "bandwidth destination");
        let kernel = self
            .rec
            .kernel("copy", SOURCE, &[], &[Access::Read, Access::ReadWrite]);
        let params = Params {
            n: n as u32,
            _pad: [0; 3],
        };
        let groups = grid(n.div_ceil(WORKGROUP) as u32);
        let measured: Result<f64> = async {
            // The warm-up also submits earlier work and builds the bind group, outside the timed span.
            self.rec
                .dispatch(&kernel, bytemuck::bytes_of(&params), &[&src, &dst], groups)?;
            self.rec.read(&dst, 0, 16).await?;
            let start = now_ms();
            for _ in 0..iterations {
                self.rec
                    .dispatch(&kernel, bytemuck::bytes_of(&params), &[&src, &dst], groups)?;
            }
            self.rec.read(&dst, 0, 16).await?;
            let seconds = (now_ms() - start) / 1000.0;
            if seconds <= 0.0 {
                return Err(Error::Backend(
                    "the copy finished faster than the clock ticks".into(),
                ));
            }
            Ok::<_, Error>((2 * bytes * iterations as u64) as f64 / seconds / 1e9)
        }
        .await;
        // The cached bind group holds both buffers alive.
        self.rec.forget_bind_groups();
        measured
    }
}
