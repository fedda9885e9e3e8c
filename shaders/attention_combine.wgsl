// Merges the split partials of attention.wgsl: with M = max_s m_s and w_s = exp(m_s - M),
//   out = Σ_s w_s·acc_s / Σ_s w_s·l_s.
// One workgroup per (row, query head); threads over head_dim.
// Bindings: scratch [rows·n_heads, splits, head_dim + 2] (m, l, acc[head_dim]), out [rows, n_heads·head_dim].

struct Params {
    heads: u32,
    head_dim: u32,
    splits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scratch: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let h = wid.x + wid.y * nwg.x;
    if (h >= p.heads) {
        return;
    }
    let stride = p.head_dim + 2u;
    let base = h * p.splits * stride;
    var mx = -1.0e30;
    for (var s = 0u; s < p.splits; s++) {
        mx = max(mx, scratch[base + s * stride]);
    }
    var total = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        total += exp(scratch[base + s * stride] - mx) * scratch[base + s * stride + 1u];
    }
    let inv = select(0.0, 1.0 / total, total > 0.0);
    for (var i = lid; i < p.head_dim; i += WG) {
        var a = 0.0;
        for (var s = 0u; s < p.splits; s++) {
            a += exp(scratch[base + s * stride] - mx) * scratch[base + s * stride + 2u + i];
        }
        out[h * p.head_dim + i] = a * inv;
    }
}
