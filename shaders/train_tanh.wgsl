// tanh accurate to a few ulps over the whole line, prepended to training's kernels (train_elementwise.wgsl,
// train_attention_common.wgsl). Through exp alone, 1 − e^(−2|x|) cancels for small |x| (an error of 1e-4 relative at
// x = 1e-4), and the driver's tanh may overflow to NaN for large |x|; training is held to the CPU twin's libm tanh.
fn tanh_f32(x: f32) -> f32 {
    let a = abs(x);
    if (a >= 1.0) {
        let e = exp(-2.0 * a);
        return sign(x) * (1.0 - e) / (1.0 + e);
    }
    // Lambert's continued fraction x / (1 + x² / (3 + x² / (5 + …))): below 1, eight levels are exact in f32.
    let x2 = x * x;
    var f = 17.0;
    for (var k = 15.0; k > 0.0; k -= 2.0) {
        f = k + x2 / f;
    }
    return x / f;
}
