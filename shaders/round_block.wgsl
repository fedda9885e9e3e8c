// One block of activations rounded the way ggml's CPU quantises them before a product with a weight of a given
// type, so a GGUF model on the GPU follows llama.cpp's numerics (x' = what ggml's integer dot product effectively
// multiplies by):
//   mode 1: Q8_0 blocks of 32 (Q4_0, Q5_0, Q8_0 weights): q = round_even(x · 127 / amax), x' = q · f16(amax / 127)
//   mode 2: Q8_K blocks of 256 (K-quants): with `max` the value of largest magnitude, iscale = -127 / max,
//           q = min(round_even(iscale · x), 127), x' = q · d with d = 1 / iscale (Q8_K's d), and per block
//           delta = d (written only where a delta buffer of that size is bound: the exact path, which rebuilds
//           the Q8_K block from x' and d, matmul_exact_k.wgsl)
//   mode 3: f16(x) (F16 weights)          mode 4: bf16(x), round to nearest even (BF16 weights)
//   mode 5: Q8_1 (Q4_1, Q5_1 weights): x' as mode 1, and per block delta = f16(d · Σq) - f16(d) · Σq with the
//           unrounded d = amax / 127. ggml adds m · f16(d · Σq) per block where Σ x' gives m · f16(d) · Σq, so
//           the product adds m · delta.
// Prepended to shaders that define round_src(i) -> f32 (the activations), round_dst(i, v) (the rounded ones) and
// round_delta(block, v) (modes 2 and 5; it writes only blocks its delta buffer holds); modes 3 and 4 take one
// value per "block".

fn to_f16(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

fn to_bf16(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    let rounded = (b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u;
    return bitcast<f32>(rounded);
}

// Values per block in a mode.
fn round_block_size(mode: u32) -> u32 {
    if (mode == 2u) {
        return 256u;
    }
    return select(32u, 1u, mode == 3u || mode == 4u);
}

fn round_block(mode: u32, block: u32) {
    if (mode == 3u || mode == 4u) {
        let v = round_src(block);
        round_dst(block, select(to_bf16(v), to_f16(v), mode == 3u));
        return;
    }
    let size = round_block_size(mode);
    let base = block * size;
    var amax = 0.0;
    var max = 0.0;
    for (var i = 0u; i < size; i++) {
        let v = round_src(base + i);
        if (abs(v) > amax) {
            amax = abs(v);
            max = v;
        }
    }
    if (mode == 2u) {
        let iscale = select(0.0, -127.0 / max, amax != 0.0);
        let d = select(0.0, 1.0 / iscale, amax != 0.0);
        for (var i = 0u; i < size; i++) {
            round_dst(base + i, min(round(iscale * round_src(base + i)), 127.0) * d);
        }
        round_delta(block, d);
        return;
    }
    let d = amax / 127.0;
    let d16 = to_f16(d);
    let inv = select(0.0, 127.0 / amax, amax != 0.0);
    var sum = 0i;
    for (var i = 0u; i < size; i++) {
        let q = clamp(round(round_src(base + i) * inv), -128.0, 127.0);
        sum += i32(q);
        round_dst(base + i, q * d16);
    }
    if (mode == 5u) {
        round_delta(block, to_f16(d * f32(sum)) - d16 * f32(sum));
    }
}
