// What rope.wgsl and rope_append.wgsl share. The including shader declares `inv_freq: array<f32>` ([half]) and
// defines ADJACENT.

// The angle of pair i at position pos. theta_scale > 0: as ggml builds it, theta_0 = pos,
// theta_{i+1} = theta_i · theta_scale (each product rounded); 0: pos · inv_freq[i] (tables with llama3 frequency
// factors folded in).
fn rope_theta(pos: u32, i: u32, theta_scale: f32) -> f32 {
    var theta = f32(pos);
    if (theta_scale > 0.0) {
        for (var j = 0u; j < i; j++) {
            theta *= theta_scale;
        }
    } else {
        theta *= inv_freq[i];
    }
    return theta;
}

// Offsets of pair i inside a head of 2·half values: ADJACENT pairs (2i, 2i+1) are llama GGUF's layout (the
// converter permuted q/k); otherwise (i, i + half), HF's.
fn rope_pair(i: u32, half: u32) -> vec2<u32> {
    if (ADJACENT) {
        return vec2<u32>(2u * i, 2u * i + 1u);
    }
    return vec2<u32>(i, i + half);
}

// (x0, x1) rotated by theta, as llama.cpp's build contracts the rotation into fused multiply-adds.
fn rope_rotate(x0: f32, x1: f32, theta: f32) -> vec2<f32> {
    let c = cos(theta);
    let s = sin(theta);
    return vec2<f32>(fma(x0, c, -(x1 * s)), fma(x0, s, x1 * c));
}
