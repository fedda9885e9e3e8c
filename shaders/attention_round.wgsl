// Appended to attention.wgsl (round_block.wgsl prepended) when the output feeds a quantised o projection: with one
// split, each workgroup rounds the heads it wrote in the same pass, as ggml rounds the o projection's input.
// ROUND is the rounding mode; a head is whole blocks of it. Bindings: rounded (like dst), delta [rows, cols / 32]
// (Q8_1 only).

@group(0) @binding(8) var<storage, read_write> rounded: array<f32>;
@group(0) @binding(9) var<storage, read_write> delta: array<f32>;

fn round_src(i: u32) -> f32 {
    return dst[i];
}

fn round_dst(i: u32, v: f32) {
    rounded[i] = v;
}

fn round_delta(block: u32, v: f32) {
    // Mode 2's d is kept only where a buffer for it is bound (the exact path); otherwise delta is a stand-in.
    if (block < arrayLength(&delta)) {
        delta[block] = v;
    }
}

// The block's output rows: rows row0.. and query heads gh0.. of kv head kv_head, as the epilogue wrote them.
fn round_heads(row0: u32, gh0: u32, kv_head: u32, lid: u32) {
    storageBarrier();
    let per_head = HEAD_DIM / round_block_size(ROUND);
    for (var t = lid; t < NQ * per_head; t += WG) {
        let qi = t / per_head;
        let row = row0 + qi / HB;
        let gh = gh0 + qi % HB;
        if (row < p.rows && gh < p.group_size) {
            round_block(ROUND, (row * p.n_heads + kv_head * p.group_size + gh) * per_head + t % per_head);
        }
    }
}
