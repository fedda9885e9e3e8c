// RMSNorm over consecutive groups of `group` values (a row, or one head for QK-norm): one workgroup per group.
//   main:     y = x / sqrt(mean(x²) + eps) * w
//   add_norm: s = x + r; y = s / sqrt(mean(s²) + eps) * w — the residual add fused into the next layer's norm.
//             With p.pre_norm, r is first normalised by its own weight rw (Gemma's post-attention and post-MLP
//             norms): s = x + r / sqrt(mean(r²) + eps) * rw.
//   add_norm_round: add_norm, then y rounded for the products that read it next (round_block.wgsl, prepended; the
//             rounding mode is p.mode, and a group is a whole row of whole blocks).
// With EXACT = 1u (the exact path; exact.wgsl prepended) the sums of squares are kept in float-float, as ggml keeps
// them in double, and the mean, square root and reciprocal are correctly rounded: the CPU backend's bits.
// Bindings: x [groups, group], w [group], y [groups, group]; add_norm also r (like x), s (like x) and rw [group]
// (any buffer without pre_norm); add_norm_round also y_rounded (like x) and delta [groups, group / 32] (Q8_1;
// mode 2 on the exact path: [groups, group / 256], Q8_K's d).

struct Params {
    group: u32,
    groups: u32,
    eps: f32,
    mode: u32,
    pre_norm: u32,
    zero: u32,  // 0: exact.wgsl's opaque zero
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> r: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;
@group(0) @binding(6) var<storage, read> rw: array<f32>;
@group(0) @binding(7) var<storage, read_write> y_rounded: array<f32>;
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;

fn round_src(i: u32) -> f32 {
    return y[i];
}

fn round_dst(i: u32, v: f32) {
    y_rounded[i] = v;
}

fn round_delta(block: u32, v: f32) {
    // Mode 2's d is kept only where a buffer for it is bound (the exact path); otherwise delta is a stand-in.
    if (block < arrayLength(&delta)) {
        delta[block] = v;
    }
}

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;
var<workgroup> partial_df: array<vec2<f32>, WG>;

// The exact path's 1 / rms from each invocation's float-float sum of squares: ggml sums (v · v rounded to f32) in
// double, rounds sum / n to f32, then 1 / sqrtf(mean + eps).
fn inverse_rms_exact(lid: u32, sum: vec2<f32>) -> f32 {
    workgroupBarrier();
    partial_df[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let a = partial_df[lid];
            let b = partial_df[lid + stride];
            partial_df[lid] = df_add(vec2<f32>(a.x, 0.0), b.x) + vec2<f32>(0.0, a.y + b.y);
        }
        workgroupBarrier();
    }
    let total = partial_df[0];
    let mean = df_div(two_sum(total.x, total.y), f32(p.group));
    return div_rn(1.0, sqrt_rn(mean + p.eps));
}

// Adds v · v to an invocation's sum of squares (f32 on the fast path; float-float on the exact one in `df`).
fn add_square(sum: ptr<function, f32>, df: ptr<function, vec2<f32>>, v: f32) {
    if (EXACT == 1u) {
        *df = df_add(*df, v * v);
    } else {
        *sum += v * v;
    }
}

fn finish_rms(lid: u32, sum: f32, df: vec2<f32>) -> f32 {
    if (EXACT == 1u) {
        return inverse_rms_exact(lid, df);
    }
    return inverse_rms(lid, sum);
}

// 1 / rms of the group from each invocation's partial sum of squares.
fn inverse_rms(lid: u32, sum: f32) -> f32 {
    // A previous call's result may still be being read.
    workgroupBarrier();
    partial[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    // 1 / sqrt, not inverseSqrt: some drivers (SwiftShader) approximate inverseSqrt coarsely.
    return 1.0 / sqrt(partial[0] / f32(p.group) + p.eps);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    exact_init(p.zero);
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    let base = g * p.group;
    var sum = 0.0;
    var df = vec2<f32>(0.0);
    for (var i = lid; i < p.group; i += WG) {
        add_square(&sum, &df, x[base + i]);
    }
    let scale = finish_rms(lid, sum, df);
    for (var i = lid; i < p.group; i += WG) {
        y[base + i] = x[base + i] * scale * w[i];
    }
}

fn residual_norm(g: u32, lid: u32) {
    let base = g * p.group;
    var r_scale = 0.0;
    if (p.pre_norm != 0u) {
        var r_sum = 0.0;
        var r_df = vec2<f32>(0.0);
        for (var i = lid; i < p.group; i += WG) {
            add_square(&r_sum, &r_df, r[base + i]);
        }
        r_scale = finish_rms(lid, r_sum, r_df);
    }
    var sum = 0.0;
    var df = vec2<f32>(0.0);
    for (var i = lid; i < p.group; i += WG) {
        var v = x[base + i] + r[base + i];
        if (p.pre_norm != 0u) {
            v = x[base + i] + r[base + i] * r_scale * rw[i];
        }
        s[base + i] = v;
        add_square(&sum, &df, v);
    }
    let scale = finish_rms(lid, sum, df);
    for (var i = lid; i < p.group; i += WG) {
        y[base + i] = s[base + i] * scale * w[i];
    }
}

@compute @workgroup_size(WG)
fn add_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    exact_init(p.zero);
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    residual_norm(g, lid);
}

@compute @workgroup_size(WG)
fn add_norm_round(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    exact_init(p.zero);
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) {
        return;
    }
    residual_norm(g, lid);
    // Each invocation rounds whole blocks of the row it helped write.
    storageBarrier();
    let size = round_block_size(p.mode);
    let blocks = p.group / size;
    for (var b = lid; b < blocks; b += WG) {
        round_block(p.mode, g * blocks + b);
    }
}
