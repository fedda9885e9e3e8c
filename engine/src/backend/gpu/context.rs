//! The wgpu adapter and device: which limits and features we ask for, and how errors come back as values.

use crate::{Error, Result};
use std::sync::{Arc, Mutex};

/// What a caller may ask of the GPU backend.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Pretend the adapter binds at most this many bytes per storage buffer (tests force small limits to
    /// exercise tensor splitting).
    pub max_binding_bytes: Option<u64>,
    /// Use f32 arithmetic even where the adapter offers shader-f16.
    pub force_f32: bool,
    /// Use the product kernels written for real GPUs even on a CPU-emulated adapter (tests run both families).
    pub force_cooperative_products: bool,
    /// Reproduce the CPU backend bit for bit where a kernel can (shaders/exact.wgsl): f32 arithmetic, ggml's
    /// operation order and a correctly rounded software fma. Slower; see `GpuContext::exact`.
    pub exact: bool,
}

/// The adapter as the UI and benchmarks describe it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub driver: String,
    pub device_type: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub max_storage_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub max_workgroup_storage_bytes: u32,
    /// Every feature the adapter offers, by its WebGPU name where it has one (`shader-f16`, `timestamp-query`, …).
    #[serde(default)]
    pub features: Vec<String>,
    /// The adapter's limits that decide what a model needs (wgpu's field names), for the UI and benchmarks.
    #[serde(default)]
    pub limits: Vec<(String, u64)>,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.name, self.backend)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

/// Errors wgpu reports out of band (validation, out of memory, device loss), kept until the next op asks.
#[derive(Default)]
pub(crate) struct ErrorSink {
    first: Mutex<Option<String>>,
    lost: Mutex<Option<String>>,
}

impl ErrorSink {
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(why) = self.lost.lock().map(|g| g.clone()).unwrap_or(None) {
            return Err(Error::Backend(format!(
                "the GPU device was lost ({why}); load the model again"
            )));
        }
        if let Some(e) = self.first.lock().ok().and_then(|mut g| g.take()) {
            return Err(Error::Backend(format!("GPU error: {e}")));
        }
        Ok(())
    }
}

/// Why there is no adapter, in words a user can act on. In a browser wgpu's own message lists every native backend
/// it was built without; what matters there is whether the page has WebGPU at all.
#[cfg(not(target_arch = "wasm32"))]
fn no_adapter_reason(e: wgpu::RequestAdapterError) -> String {
    format!("no GPU adapter: {e}")
}

#[cfg(target_arch = "wasm32")]
fn no_adapter_reason(_: wgpu::RequestAdapterError) -> String {
    let navigator =
        js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default();
    let gpu = js_sys::Reflect::get(&navigator, &"gpu".into()).unwrap_or_default();
    if gpu.is_undefined() || gpu.is_null() {
        "this browser offers no WebGPU here (navigator.gpu is missing)".into()
    } else {
        "the browser has WebGPU but gives no adapter (requestAdapter() returned none)".into()
    }
}

pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) summary: AdapterSummary,
    /// Largest storage binding we use (≤ the device limit, or the forced test limit).
    pub(crate) max_binding: u64,
    pub(crate) max_buffer: u64,
    pub(crate) f16: bool,
    /// The adapter runs shaders on the CPU (lavapipe, SwiftShader): kernels then prefer fewer memory loads over
    /// coalescing and parallelism (see shaders/matvec_rows.wgsl).
    pub(crate) cpu_emulated: bool,
    /// Kernels that have an exact twin (products of 32-value block types, RMSNorm, SiLU gating, RoPE, attention)
    /// run it: the results equal the CPU backend's bit for bit, so greedy decoding follows the CPU's path even
    /// where 8-bit activation rounding would turn a last-bit difference into a different token.
    pub(crate) exact: bool,
    pub(crate) uniform_align: u64,
    pub(crate) errors: Arc<ErrorSink>,
}

impl GpuContext {
    /// Finds an adapter and opens a device with the limits models need. Fails (does not panic) without one.
    pub async fn new(options: &GpuOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Backend(no_adapter_reason(e)))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        let shader_f16 = features.contains(wgpu::Features::SHADER_F16);
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        let cpu_emulated = !options.force_cooperative_products
            && (info.device_type == wgpu::DeviceType::Cpu
                || [&info.name, &info.driver, &info.driver_info]
                    .iter()
                    .any(|s| {
                        let s = s.to_lowercase();
                        s.contains("swiftshader")
                            || s.contains("llvmpipe")
                            || s.contains("lavapipe")
                    }));
        let summary = AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: [info.driver.as_str(), info.driver_info.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            device_type: format!("{:?}", info.device_type),
            shader_f16,
            subgroups,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size as u64,
            max_buffer_bytes: limits.max_buffer_size,
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            features: features
                .iter_names()
                .map(|(name, f)| f.as_str().unwrap_or(name).to_string())
                .collect(),
            limits: [
                (
                    "max_storage_buffer_binding_size",
                    limits.max_storage_buffer_binding_size as u64,
                ),
                ("max_buffer_size", limits.max_buffer_size),
                (
                    "max_compute_workgroup_storage_size",
                    limits.max_compute_workgroup_storage_size.into(),
                ),
                (
                    "max_compute_invocations_per_workgroup",
                    limits.max_compute_invocations_per_workgroup.into(),
                ),
                (
                    "max_compute_workgroup_size_x",
                    limits.max_compute_workgroup_size_x.into(),
                ),
                (
                    "max_compute_workgroups_per_dimension",
                    limits.max_compute_workgroups_per_dimension.into(),
                ),
                (
                    "max_storage_buffers_per_shader_stage",
                    limits.max_storage_buffers_per_shader_stage.into(),
                ),
                (
                    "max_uniform_buffer_binding_size",
                    limits.max_uniform_buffer_binding_size as u64,
                ),
                (
                    "min_storage_buffer_offset_alignment",
                    limits.min_storage_buffer_offset_alignment.into(),
                ),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
        };
        // Ask for everything the adapter offers that matters to us: big bindings, big buffers, many bindings.
        let mut required = wgpu::Limits::downlevel_defaults();
        required.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size;
        required.max_buffer_size = limits.max_buffer_size;
        required.max_storage_buffers_per_shader_stage =
            limits.max_storage_buffers_per_shader_stage.min(10);
        required.max_compute_workgroup_storage_size = limits.max_compute_workgroup_storage_size;
        required.max_compute_invocations_per_workgroup =
            limits.max_compute_invocations_per_workgroup.min(256);
        required.max_compute_workgroup_size_x = limits.max_compute_workgroup_size_x.min(256);
        required.max_compute_workgroups_per_dimension = limits.max_compute_workgroups_per_dimension;
        if required.max_compute_invocations_per_workgroup < 256
            || required.max_compute_workgroup_size_x < 256
        {
            return Err(Error::Backend(format!(
                "the GPU adapter {summary} runs at most {} invocations per workgroup; Aviary needs 256",
                limits.max_compute_invocations_per_workgroup
            )));
        }
        let mut required_features = wgpu::Features::empty();
        let f16 = shader_f16 && !options.force_f32 && !options.exact;
        if f16 {
            required_features |= wgpu::Features::SHADER_F16;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("aviary"),
                required_features,
                required_limits: required,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::Backend(format!("the GPU adapter {summary} refused a device: {e}"))
            })?;
        let errors = Arc::new(ErrorSink::default());
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut first) = sink.first.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut lost) = sink.lost.lock() {
                *lost = Some(format!("{reason:?}: {message}"));
            }
        });
        // The device's alignment, not the adapter's: the device was opened with default (coarser) limits.
        // Each slot also holds a whole uniform block.
        let uniform_align = (device.limits().min_uniform_buffer_offset_alignment as u64)
            .max(super::recorder::UNIFORM_BYTES);
        let mut max_binding = summary.max_storage_binding_bytes;
        if let Some(forced) = options.max_binding_bytes {
            max_binding = max_binding.min(forced.max(256));
        }
        Ok(Self {
            device,
            queue,
            max_binding,
            max_buffer: summary.max_buffer_bytes,
            uniform_align,
            f16,
            cpu_emulated,
            exact: options.exact,
            summary,
            errors,
        })
    }

    pub fn summary(&self) -> &AdapterSummary {
        &self.summary
    }
}
