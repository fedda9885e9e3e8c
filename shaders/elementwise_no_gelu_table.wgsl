// elementwise.wgsl without the GELU table (every path but the exact one's GELU, which prepends
// elementwise_gelu_table.wgsl instead): OP 6 is never specialised with this.

fn gelu_table_f16(h: u32) -> f32 {
    return 0.0;
}
