//! Reading reference logits and comparing them with the engine's, without touching the file system: the browser
//! tests (tests/web_goldens.rs) include this file too, so native and wasm runs apply the same check.

pub fn as_u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

pub fn as_matrix(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("an array of rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect()
        })
        .collect()
}

/// max |got - want| / max |want| for each position; panics naming the first position over `tol` and its worst index.
pub fn assert_logits_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tol: f32) -> f32 {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} positions, reference has {}",
        got.len(),
        want.len()
    );
    let mut worst = 0f32;
    for (pos, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.len(),
            w.len(),
            "{what}: position {pos} has {} logits, reference {}",
            g.len(),
            w.len()
        );
        let scale = w
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .max(f32::MIN_POSITIVE);
        let (idx, diff) = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .fold((0, 0f32), |best, (i, d)| {
                if d > best.1 || d.is_nan() {
                    (i, d)
                } else {
                    best
                }
            });
        let rel = diff / scale;
        worst = worst.max(rel);
        assert!(
            rel <= tol,
            "{what}: position {pos}, vocab index {idx}: got {} want {} (max|diff|/max|ref| = {rel:.3e} > {tol:.0e})",
            g[idx],
            w[idx]
        );
    }
    worst
}
