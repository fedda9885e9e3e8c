//! `cfg(threaded)`: the CPU kernels may split their work over rayon's pool. Natively always; in wasm only in a build
//! with shared memory (`+atomics`), whose pool threads are web workers the host starts (the app's worker does).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(threaded)");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if arch != "wasm32" || features.split(',').any(|f| f == "atomics") {
        println!("cargo::rustc-cfg=threaded");
    }
}
