//! Records dispatches into one command encoder and submits them together: a decode step is one submit.
//!
//! Every dispatch's small uniform block goes into one arena buffer at a dynamic offset, written just before the
//! submit, so bind groups (keyed by kernel and buffers) are built once and reused token after token.

use super::context::GpuContext;
use super::pool::{GpuBuf, Pool};
use crate::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Bytes of uniforms one dispatch may pass.
pub(crate) const UNIFORM_BYTES: u64 = 128;
const INITIAL_ARENA_SLOTS: u64 = 2048;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    ReadWrite,
}

/// One compiled specialisation of a WGSL kernel: binding 0 is its uniform block, then its storage buffers.
pub(crate) struct Kernel {
    id: u64,
    // Named in native profiles only (AVIARY_GPU_PROFILE).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    name: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    storage: usize,
}

/// A whole buffer bound to one storage slot.
pub(crate) type Bind<'a> = &'a GpuBuf;

#[derive(Hash, PartialEq, Eq)]
struct BindKey {
    kernel: u64,
    arena: u64,
    buffers: Vec<u64>,
}

pub(crate) struct Recorder {
    pub(crate) ctx: Rc<GpuContext>,
    pub(crate) pool: Rc<Pool>,
    kernels: RefCell<HashMap<String, Rc<Kernel>>>,
    state: RefCell<State>,
    /// Milliseconds and dispatches per kernel, when AVIARY_GPU_PROFILE is set (native only): every dispatch is then
    /// submitted and waited for alone, which is slow but says where a step's time goes.
    profile: Option<RefCell<HashMap<String, (f64, u64)>>>,
}

struct State {
    encoder: Option<wgpu::CommandEncoder>,
    uniforms: Vec<u8>,
    arena: GpuBuf,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    staging: Option<GpuBuf>,
    /// Small host data (token ids) that dispatches of the pending submit read, written with the uniforms.
    uploads: Vec<u32>,
    upload_buf: Rc<GpuBuf>,
}

impl Recorder {
    pub(crate) fn new(ctx: Rc<GpuContext>) -> Self {
        let pool = Rc::new(Pool::default());
        let arena = Self::new_arena(&ctx, &pool, INITIAL_ARENA_SLOTS);
        let upload_buf = Rc::new(Self::new_upload(&ctx, &pool, 4096));
        Self {
            ctx,
            pool,
            kernels: RefCell::default(),
            state: RefCell::new(State {
                encoder: None,
                uniforms: Vec::new(),
                arena,
                bind_groups: HashMap::new(),
                staging: None,
                uploads: Vec::new(),
                upload_buf,
            }),
            profile: (cfg!(not(target_arch = "wasm32"))
                && std::env::var_os("AVIARY_GPU_PROFILE").is_some())
            .then(RefCell::default),
        }
    }

    /// Per-kernel time, slowest first, when profiling.
    pub(crate) fn profile_report(&self) -> Option<String> {
        let profile = self.profile.as_ref()?.borrow();
        let mut rows: Vec<_> = profile.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let total: f64 = rows.iter().map(|r| r.1 .0).sum();
        let mut out = format!("GPU time by kernel ({total:.0} ms in all):\n");
        for (name, (ms, n)) in rows {
            out.push_str(&format!(
                "{ms:10.1} ms {:5.1}% {n:8} dispatches  {name}\n",
                100.0 * ms / total
            ));
        }
        Some(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn profile_dispatch(&self, kernel: &Kernel) -> Result<()> {
        let Some(profile) = &self.profile else {
            return Ok(());
        };
        let start = std::time::Instant::now();
        self.flush()?;
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Backend(format!("waiting for the GPU failed: {e}")))?;
        let mut profile = profile.borrow_mut();
        let entry = profile.entry(kernel.name.clone()).or_default();
        entry.0 += start.elapsed().as_secs_f64() * 1000.0;
        entry.1 += 1;
        Ok(())
    }

    #[cfg(target_arch = "wasm32")]
    fn profile_dispatch(&self, _kernel: &Kernel) -> Result<()> {
        Ok(())
    }

    fn new_arena(ctx: &GpuContext, pool: &Pool, slots: u64) -> GpuBuf {
        pool.create(
            &ctx.device,
            slots * ctx.uniform_align,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            "uniform arena",
        )
    }

    fn new_upload(ctx: &GpuContext, pool: &Pool, words: u64) -> GpuBuf {
        pool.create(
            &ctx.device,
            words * 4,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            "uploads",
        )
    }

    /// Stages `data` for the pending submit; returns the buffer to bind and the word offset where `data` starts.
    pub(crate) fn upload_u32(&self, data: &[u32]) -> Result<(Rc<GpuBuf>, u32)> {
        let mut st = self.state.borrow_mut();
        if (st.uploads.len() + data.len()) as u64 * 4 > st.upload_buf.size {
            drop(st);
            self.flush()?;
            st = self.state.borrow_mut();
            let words = (2 * st.upload_buf.size / 4).max(data.len() as u64 * 2);
            st.upload_buf = Rc::new(Self::new_upload(&self.ctx, &self.pool, words));
        }
        let offset = st.uploads.len() as u32;
        st.uploads.extend_from_slice(data);
        Ok((st.upload_buf.clone(), offset))
    }

    /// The kernel `name` specialised by `defines` (prepended as WGSL `const`s, or `alias`es for the values f16 and
    /// f32), compiled on first use.
    pub(crate) fn kernel(
        &self,
        name: &str,
        source: &str,
        defines: &[(&str, String)],
        access: &[Access],
    ) -> Rc<Kernel> {
        self.kernel_entry(name, source, "main", defines, access)
    }

    /// Like `kernel`, for a shader file with several entry points.
    pub(crate) fn kernel_entry(
        &self,
        name: &str,
        source: &str,
        entry: &str,
        defines: &[(&str, String)],
        access: &[Access],
    ) -> Rc<Kernel> {
        let mut key = format!("{name}:{entry}");
        for (k, v) in defines {
            key.push_str(&format!(";{k}={v}"));
        }
        if let Some(k) = self.kernels.borrow().get(&key) {
            return k.clone();
        }
        let mut code = String::new();
        if self.ctx.f16 && source.contains("enable f16;") {
            code.push_str("enable f16;\n");
        }
        for (k, v) in defines {
            // A scalar type name defines a type alias (e.g. the KV cache's element type), anything else a constant.
            if matches!(v.as_str(), "f16" | "f32") {
                code.push_str(&format!("alias {k} = {v};\n"));
            } else {
                code.push_str(&format!("const {k} = {v};\n"));
            }
        }
        code.push_str(&source.replace("enable f16;", ""));
        let device = &self.ctx.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(code.into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, a) in access.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *a == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(name),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        self.pool.count(|c| c.allocations += 1);
        let kernel = Rc::new(Kernel {
            id: self.kernels.borrow().len() as u64 + 1,
            name: key.clone(),
            pipeline,
            layout,
            storage: access.len(),
        });
        self.kernels.borrow_mut().insert(key, kernel.clone());
        kernel
    }

    /// Records one dispatch. `params` is the kernel's uniform struct as bytes (≤ UNIFORM_BYTES).
    pub(crate) fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[Bind],
        groups: [u32; 3],
    ) -> Result<()> {
        if buffers.len() != kernel.storage || params.len() as u64 > UNIFORM_BYTES {
            return Err(Error::Backend(
                "a GPU kernel was launched with the wrong bindings".into(),
            ));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let align = self.ctx.uniform_align;
        let mut state = self.state.borrow_mut();
        if state.uniforms.len() as u64 + align > state.arena.size {
            // Recorded dispatches point into the current arena: submit them before replacing it.
            drop(state);
            self.flush()?;
            state = self.state.borrow_mut();
            let slots = 2 * state.arena.size / align;
            state.arena = Self::new_arena(&self.ctx, &self.pool, slots);
            state.bind_groups.clear();
        }
        let offset = state.uniforms.len() as u32;
        state.uniforms.extend_from_slice(params);
        state.uniforms.resize(offset as usize + align as usize, 0);

        let key = BindKey {
            kernel: kernel.id,
            arena: state.arena.id,
            buffers: buffers.iter().map(|b| b.id).collect(),
        };
        if !state.bind_groups.contains_key(&key) {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &state.arena.buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(UNIFORM_BYTES),
                }),
            }];
            for (i, b) in buffers.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.buffer.as_entire_binding(),
                });
            }
            let group = self
                .ctx
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &kernel.layout,
                    entries: &entries,
                });
            self.pool.count(|c| c.allocations += 1);
            state.bind_groups.insert(key, group);
        }
        let st = &mut *state;
        let group = &st.bind_groups[&BindKey {
            kernel: kernel.id,
            arena: st.arena.id,
            buffers: buffers.iter().map(|b| b.id).collect(),
        }];
        let encoder = st.encoder.get_or_insert_with(|| {
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                })
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, group, &[offset]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        drop(pass);
        drop(state);
        self.pool.count(|c| c.dispatches += 1);
        self.profile_dispatch(kernel)
    }

    /// Records a buffer-to-buffer copy.
    pub(crate) fn copy(
        &self,
        src: &GpuBuf,
        src_offset: u64,
        dst: &GpuBuf,
        dst_offset: u64,
        bytes: u64,
    ) {
        let mut st = self.state.borrow_mut();
        let encoder = st.encoder.get_or_insert_with(|| {
            self.ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                })
        });
        encoder.copy_buffer_to_buffer(&src.buffer, src_offset, &dst.buffer, dst_offset, bytes);
    }

    /// Submits everything recorded so far.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut st = self.state.borrow_mut();
        if let Some(encoder) = st.encoder.take() {
            if !st.uniforms.is_empty() {
                self.ctx
                    .queue
                    .write_buffer(&st.arena.buffer, 0, &st.uniforms);
            }
            if !st.uploads.is_empty() {
                self.ctx.queue.write_buffer(
                    &st.upload_buf.buffer,
                    0,
                    bytemuck::cast_slice(&st.uploads),
                );
            }
            self.ctx.queue.submit([encoder.finish()]);
            self.pool.count(|c| c.submits += 1);
        }
        st.uniforms.clear();
        st.uploads.clear();
        drop(st);
        self.ctx.errors.check()
    }

    /// Copies `bytes` of `src` from `offset` to the host: one submit, then an awaited map (never a blocking wait on
    /// the web).
    pub(crate) async fn read(&self, src: &GpuBuf, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let padded = bytes.next_multiple_of(4);
        let staging = {
            let mut st = self.state.borrow_mut();
            if st.staging.as_ref().is_none_or(|s| s.size < padded) {
                st.staging = Some(self.pool.create(
                    &self.ctx.device,
                    padded.max(4096),
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    "readback",
                ));
            }
            let staging = st.staging.take().expect("staging buffer was just made");
            let encoder = st.encoder.get_or_insert_with(|| {
                self.ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("step"),
                    })
            });
            encoder.copy_buffer_to_buffer(&src.buffer, offset, &staging.buffer, 0, padded);
            staging
        };
        let result = self.map_staging(&staging, padded).await;
        self.state.borrow_mut().staging = Some(staging);
        let mut data = result?;
        data.truncate(bytes as usize);
        self.pool.count(|c| c.readback_bytes += bytes);
        Ok(data)
    }

    async fn map_staging(&self, staging: &GpuBuf, padded: u64) -> Result<Vec<u8>> {
        self.flush()?;
        let (tx, rx) = futures::channel::oneshot::channel();
        let slice = staging.buffer.slice(0..padded);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Backend(format!("waiting for the GPU failed: {e}")))?;
        let mapped = rx
            .await
            .map_err(|_| Error::Backend("the GPU dropped a readback".into()))?;
        self.ctx.errors.check()?;
        mapped.map_err(|e| Error::Backend(format!("reading GPU memory failed: {e}")))?;
        let data = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Backend(format!("reading GPU memory failed: {e}")))?;
            view.to_vec()
        };
        staging.buffer.unmap();
        Ok(data)
    }

    /// Forgets cached bind groups of buffers that are going away.
    pub(crate) fn forget_bind_groups(&self) {
        self.state.borrow_mut().bind_groups.clear();
    }
}

/// Workgroup counts for `n` workgroups, folded into two dimensions when one would exceed the limit (kernels
/// recombine with `wid.x + wid.y * num_workgroups.x`).
pub(crate) fn grid(n: u32) -> [u32; 3] {
    const MAX: u32 = 65535;
    if n <= MAX {
        [n, 1, 1]
    } else {
        let y = n.div_ceil(MAX);
        [n.div_ceil(y), y, 1]
    }
}
