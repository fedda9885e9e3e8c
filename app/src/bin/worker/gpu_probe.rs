//! Whether the browser's WebGPU adapter is a software rasteriser. wgpu's browser backend passes on little of
//! `GPUAdapterInfo` (no architecture, no vendor), so Auto asks `navigator.gpu` itself before opening a device.

/// What `GPUAdapterInfo` says about an adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterStrings {
    pub vendor: String,
    pub architecture: String,
    pub device: String,
    pub description: String,
    /// `info.isFallbackAdapter` (or the older `adapter.isFallbackAdapter`).
    pub fallback: bool,
}

/// Software rasterisers' names as browsers report them: Chromium's SwiftShader, Mesa's llvmpipe/lavapipe, and
/// Windows' WARP ("Microsoft Basic Render Driver").
const SOFTWARE: [&str; 4] = ["swiftshader", "llvmpipe", "lavapipe", "basic render driver"];

/// The adapter's name when it is a software one.
pub fn software_name(a: &AdapterStrings) -> Option<String> {
    let fields = [&a.vendor, &a.architecture, &a.device, &a.description];
    let named = fields.iter().any(|f| {
        let f = f.to_lowercase();
        SOFTWARE.iter().any(|s| f.contains(s))
    });
    if !(named || a.fallback) {
        return None;
    }
    let parts: Vec<&str> = fields.iter().map(|s| s.as_str()).filter(|s| !s.is_empty()).collect();
    Some(if parts.is_empty() { "a fallback adapter".to_string() } else { parts.join(", ") })
}

#[cfg(target_arch = "wasm32")]
mod probe {
    use super::{software_name, AdapterStrings};
    use wasm_bindgen::{JsCast, JsValue};

    fn get(obj: &JsValue, key: &str) -> JsValue {
        js_sys::Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
    }

    fn text(obj: &JsValue, key: &str) -> String {
        get(obj, key).as_string().unwrap_or_default()
    }

    /// The software adapter's name, when the browser's default adapter is one (None: a hardware adapter, or none).
    pub async fn software_adapter() -> Option<String> {
        let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
        let request = get(&gpu, "requestAdapter").dyn_into::<js_sys::Function>().ok()?;
        let promise = request.call0(&gpu).ok()?.dyn_into::<js_sys::Promise>().ok()?;
        let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
        if adapter.is_null() || adapter.is_undefined() {
            return None;
        }
        let info = get(&adapter, "info");
        let strings = AdapterStrings {
            vendor: text(&info, "vendor"),
            architecture: text(&info, "architecture"),
            device: text(&info, "device"),
            description: text(&info, "description"),
            fallback: get(&info, "isFallbackAdapter").as_bool().or_else(|| get(&adapter, "isFallbackAdapter").as_bool())
                == Some(true),
        };
        software_name(&strings)
    }
}

#[cfg(target_arch = "wasm32")]
pub use probe::software_adapter;

#[cfg(test)]
mod tests {
    use super::*;

    fn info(vendor: &str, architecture: &str, description: &str) -> AdapterStrings {
        AdapterStrings { vendor: vendor.into(), architecture: architecture.into(), description: description.into(), ..Default::default() }
    }

    #[test]
    fn software_rasterisers_are_told_apart_from_gpus() {
        assert_eq!(software_name(&info("google", "swiftshader", "")).as_deref(), Some("google, swiftshader"));
        assert!(software_name(&info("mesa", "", "llvmpipe (LLVM 15.0.6, 256 bits)")).is_some());
        assert!(software_name(&info("microsoft", "", "Microsoft Basic Render Driver")).is_some());
        assert!(software_name(&AdapterStrings { fallback: true, ..Default::default() }).is_some());
        assert_eq!(software_name(&info("nvidia", "ada", "NVIDIA GeForce RTX 4090")), None);
        assert_eq!(software_name(&info("intel", "gen-12lp", "")), None);
        assert_eq!(software_name(&info("apple", "metal-3", "")), None);
        assert_eq!(software_name(&AdapterStrings::default()), None);
    }
}
