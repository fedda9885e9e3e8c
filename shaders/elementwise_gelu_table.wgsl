// ggml's GELU table (ggml_table_gelu_f16: GELU of every f16, rounded to f16) as the CPU backend builds it, for
// elementwise.wgsl's OP 6. Prepended to it on the exact path; elsewhere elementwise_no_gelu_table.wgsl stands in.
// Binding 6: the table, two f16 per word, entry h in the low half of word h / 2 when h is even.

@group(0) @binding(6) var<storage, read> gelu_table: array<u32>;

fn gelu_table_f16(h: u32) -> f32 {
    return unpack2x16float(gelu_table[h >> 1u] >> ((h & 1u) * 16u)).x;
}
