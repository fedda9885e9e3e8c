//! The device panel: which backend the next Load asks for, and what the loaded model runs on — the WebGPU adapter
//! (name, type, features, the limits that bound a model), or the CPU and why WebGPU is not used. Beside what the
//! worker reports, the page asks its own `navigator.gpu` once: wgpu does not pass on the browser's vendor and
//! architecture strings, and when there is no adapter the page's view says which part is missing.

use crate::format;
use crate::state::{BackendPreference, ModelState};
use engine::backend::gpu::AdapterSummary;
use engine::protocol::{BackendChoice, BackendInfo};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

/// What the page's own `navigator.gpu` offers.
#[derive(Debug, Clone, PartialEq)]
enum PageGpu {
    Probing,
    /// `navigator.gpu` is missing: the browser (or its flags) offers no WebGPU.
    NoApi,
    /// `requestAdapter()` gave none (or failed), with what it said.
    NoAdapter(String),
    /// GPUAdapterInfo's strings: vendor, architecture, device, description (any may be empty), and the adapter's
    /// features by the browser's names (wgpu maps only those it knows).
    Adapter { vendor: String, architecture: String, device: String, description: String, features: Vec<String> },
}

impl PageGpu {
    fn explain(&self) -> String {
        match self {
            PageGpu::Probing => "asking the browser…".into(),
            PageGpu::NoApi => "this browser offers no WebGPU here (navigator.gpu is missing)".into(),
            PageGpu::NoAdapter(why) => format!("the browser has WebGPU but gives no adapter ({why})"),
            PageGpu::Adapter { vendor, architecture, .. } => {
                format!("the browser offers an adapter ({})", join_nonempty(&[vendor, architecture], ", "))
            }
        }
    }
}

fn join_nonempty(parts: &[&String], sep: &str) -> String {
    let parts: Vec<&str> = parts.iter().map(|s| s.as_str()).filter(|s| !s.is_empty()).collect();
    if parts.is_empty() { "unnamed".into() } else { parts.join(sep) }
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn get_string(obj: &JsValue, key: &str) -> String {
    get(obj, key).as_string().unwrap_or_default()
}

async fn probe_page_gpu() -> PageGpu {
    let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return PageGpu::NoApi;
    }
    let Ok(request) = get(&gpu, "requestAdapter").dyn_into::<js_sys::Function>() else {
        return PageGpu::NoApi;
    };
    let adapter = match request.call0(&gpu).map(js_sys::Promise::from) {
        Ok(p) => wasm_bindgen_futures::JsFuture::from(p).await,
        Err(e) => Err(e),
    };
    match adapter {
        Ok(a) if a.is_null() || a.is_undefined() => PageGpu::NoAdapter("requestAdapter() gave none".into()),
        Ok(a) => {
            let info = get(&a, "info");
            let mut features: Vec<String> =
                js_sys::Array::from(&get(&a, "features")).iter().filter_map(|f| f.as_string()).collect();
            features.sort();
            PageGpu::Adapter {
                features,
                vendor: get_string(&info, "vendor"),
                architecture: get_string(&info, "architecture"),
                device: get_string(&info, "device"),
                description: get_string(&info, "description"),
            }
        }
        Err(e) => PageGpu::NoAdapter(e.as_string().unwrap_or_else(|| format!("{e:?}"))),
    }
}

fn choice_value(c: BackendChoice) -> &'static str {
    match c {
        BackendChoice::Auto => "auto",
        BackendChoice::Gpu => "gpu",
        BackendChoice::Cpu => "cpu",
    }
}

#[component]
pub fn AdapterPanel() -> impl IntoView {
    let model = expect_context::<ModelState>();
    let choice = expect_context::<BackendPreference>().0;
    let page_gpu = RwSignal::new(PageGpu::Probing);
    wasm_bindgen_futures::spawn_local(async move { page_gpu.set(probe_page_gpu().await) });
    let on_choice = move |ev: leptos::ev::Event| {
        let c = match event_target_value(&ev).as_str() {
            "gpu" => BackendChoice::Gpu,
            "cpu" => BackendChoice::Cpu,
            _ => BackendChoice::Auto,
        };
        choice.set(c);
    };

    let details = move || match model.backend.get() {
        None => view! {
            <p class="muted">{move || format!("No model loaded. WebGPU: {}.", page_gpu.get().explain())}</p>
        }
        .into_any(),
        Some(BackendInfo::Gpu { adapter, f16 }) => view! { <GpuDetails adapter=adapter f16=f16 page_gpu=page_gpu/> }.into_any(),
        Some(BackendInfo::Cpu { reason, simd128, fused_madd, threads }) => {
            let why = match reason {
                Some(r) => r,
                None => "chosen in the backend choice above, although WebGPU may be available".to_string(),
            };
            view! {
                <dl class="card" data-testid="adapter-cpu">
                    <dt>"Runs on"</dt><dd>{match (simd128, fused_madd) {
                        (true, true) => "CPU (wasm with SIMD128 and relaxed SIMD's fused multiply-add), ",
                        (true, false) => "CPU (wasm with SIMD128; fused multiply-adds emulated), ",
                        _ => "CPU (wasm; fused multiply-adds emulated), ",
                    }}{if threads > 1 {
                        format!("{threads} threads (the page is cross-origin isolated)")
                    } else {
                        "one worker thread".to_string()
                    }}</dd>
                    <dt>"Why"</dt><dd data-testid="adapter-cpu-reason">{why}</dd>
                    <dt>"Page's WebGPU"</dt><dd>{move || page_gpu.get().explain()}</dd>
                </dl>
            }
            .into_any()
        }
    };

    view! {
        <section class="panel adapter" data-testid="adapter-panel">
            <h2>"Device"</h2>
            <label for="backend-choice">"Backend for the next load"</label>
            <select id="backend-choice" data-testid="backend-choice" on:change=on_choice
                prop:value=move || choice_value(choice.get())>
                <option value="auto">"Auto (WebGPU, else CPU)"</option>
                <option value="gpu">"WebGPU"</option>
                <option value="cpu">"CPU (wasm)"</option>
            </select>
            {details}
        </section>
    }
}

/// Limits measured in bytes (shown with units); the rest are counts.
fn is_bytes(limit: &str) -> bool {
    limit.ends_with("_size") && !limit.contains("workgroup_size") && !limit.contains("per_dimension")
        || limit.ends_with("alignment")
}

fn limit_label(limit: &str) -> String {
    limit.replace('_', " ")
}

#[component]
fn GpuDetails(adapter: AdapterSummary, f16: bool, page_gpu: RwSignal<PageGpu>) -> impl IntoView {
    let name = if adapter.name.is_empty() { "(the browser gives no name)".to_string() } else { adapter.name.clone() };
    let browser_info = move || match page_gpu.get() {
        PageGpu::Adapter { vendor, architecture, device, description, .. } => {
            let mut parts = vec![];
            for (k, v) in [("vendor", vendor), ("architecture", architecture), ("device", device), ("description", description)] {
                if !v.is_empty() {
                    parts.push(format!("{k} {v}"));
                }
            }
            if parts.is_empty() { "no details given".to_string() } else { parts.join(", ") }
        }
        other => other.explain(),
    };
    let backend = if adapter.driver.is_empty() {
        adapter.backend.clone()
    } else {
        format!("{} ({})", adapter.backend, adapter.driver)
    };
    let features = adapter.features.clone();
    let limits = adapter.limits.clone();
    let engine_features = features.clone();
    // Features the browser offers that wgpu does not pass on (so the engine cannot use them).
    let browser_only = move || match page_gpu.get() {
        PageGpu::Adapter { features, .. } => {
            let extra: Vec<String> = features.into_iter().filter(|f| !engine_features.contains(f)).collect();
            if extra.is_empty() { "none".to_string() } else { extra.join(", ") }
        }
        _ => "—".to_string(),
    };
    view! {
        <dl class="card" data-testid="adapter-gpu">
            <dt>"Adapter"</dt><dd data-testid="adapter-name">{name}</dd>
            <dt>"Browser says"</dt><dd>{browser_info}</dd>
            <dt>"Type"</dt><dd>{adapter.device_type.clone()}</dd>
            <dt>"Backend"</dt><dd>{backend}</dd>
            <dt>"Arithmetic"</dt><dd>{if f16 { "f16 where it can (shader-f16)" } else { "f32 (no shader-f16)" }}</dd>
            <dt title="as wgpu maps them: what the engine can ask for">"Features"</dt>
            <dd>
                <Show when={let empty = features.is_empty(); move || empty}>"none beyond the core"</Show>
                <ul class="tags" data-testid="adapter-features">
                    {features.into_iter().map(|f| view! { <li>{f}</li> }).collect_view()}
                </ul>
            </dd>
            <dt title="offered by the browser, not passed on by wgpu">"Browser only"</dt><dd data-testid="adapter-browser-only-features">{browser_only}</dd>
        </dl>
        <table class="limits" data-testid="adapter-limits">
            <tbody>
                {limits
                    .into_iter()
                    .map(|(limit, value)| {
                        let shown = if is_bytes(&limit) { format::bytes(value) } else { value.to_string() };
                        view! {
                            <tr data-testid=format!("adapter-limit-{limit}") data-value=value.to_string()>
                                <th>{limit_label(&limit)}</th>
                                <td>{shown}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}
