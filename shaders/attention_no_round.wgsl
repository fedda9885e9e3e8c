// Appended to attention.wgsl when nothing is rounded in its pass (see attention_round.wgsl).
fn round_heads(row0: u32, gh0: u32, kv_head: u32, lid: u32) {}
