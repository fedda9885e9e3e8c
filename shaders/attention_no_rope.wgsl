// Appended to attention.wgsl when q arrives rotated and the step's keys and values are already in the cache
// (rope_append.wgsl ran): the block's queries into workgroup memory.
fn load_queries(row0: u32, gh0: u32, kv_head: u32, lid: u32) {
    for (var i = lid; i < NQ * HEAD_DIM; i += WG) {
        let qi = i / HEAD_DIM;
        let row = row0 + qi / HB;
        let gh = gh0 + qi % HB;
        var x = 0.0;
        if (row < p.rows && gh < p.group_size) {
            x = q[(row * p.n_heads + kv_head * p.group_size + gh) * HEAD_DIM + i % HEAD_DIM];
        }
        qs[i] = x;
    }
}
