// What train_attention.wgsl (forward) and train_attention_backward.wgsl share (gpu/train_attention.rs; train_tanh.wgsl
// is prepended): the uniforms, q, k and v, the visible keys and the score. Causal self-attention of one sequence at
// positions 0..rows; query head h reads kv head h / (heads / kv_heads); key j is visible to row i iff
// i − window < j ≤ i (window 0: no window). score = scale · q_i·k_j, then cap · tanh(score / cap) when cap > 0.
// Both passes compute a score with the same function, so the backward's exp(score − lse) rebuilds the forward's
// probabilities exactly.
// SLOTS (defined by the launcher) = ceil(head_dim / WG): the head values each invocation keeps, at lid + WG · slot.
// Bindings: q [rows, heads · d], k, v [rows, kv_heads · d].

// Mirrors `Params` in engine/src/backend/gpu/train_attention.rs.
struct Params {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    d: u32,
    scale: f32,
    cap: f32,
    window: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;

const WG: u32 = 64u;
// Stands in for −∞ (WGSL has no infinity literal): exp of it minus any real score is 0.
const NONE: f32 = -3.0e38;

// The first key row i sees.
fn first_key(i: u32) -> u32 {
    return select(0u, i + 1u - p.window, p.window > 0u && i + 1u >= p.window);
}

// The last row that sees key j.
fn last_query(j: u32) -> u32 {
    return select(p.rows - 1u, min(p.rows - 1u, j + p.window - 1u), p.window > 0u);
}

fn q_at(i: u32, h: u32) -> u32 {
    return (i * p.heads + h) * p.d;
}

fn kv_at(j: u32, kvh: u32) -> u32 {
    return (j * p.kv_heads + kvh) * p.d;
}

fn score(i: u32, h: u32, j: u32) -> f32 {
    let qo = q_at(i, h);
    let ko = kv_at(j, h / (p.heads / p.kv_heads));
    var dot = 0.0;
    for (var c = 0u; c < p.d; c++) {
        dot += q[qo + c] * k[ko + c];
    }
    let z = p.scale * dot;
    if (p.cap > 0.0) {
        return p.cap * tanh_f32(z / p.cap);
    }
    return z;
}
