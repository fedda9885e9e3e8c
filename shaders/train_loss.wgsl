// Cross-entropy of each row of logits against its target, weighted (gpu/train_loss.rs):
//   rows:  one workgroup per row: lse = max + ln Σ exp(z − max) by two tree reductions (vocabularies reach 262k),
//          loss_rows[r] = weight · (lse − z[t]), grad[r, i] = weight · (exp(z[i] − lse) − [i = t]); a row whose
//          target is NONE scores nothing and gets a zero gradient.
//   total: one invocation adds loss_rows in row order into loss[0] (a fixed order: the same loss every run).
// Bindings: logits [rows, vocab], targets [rows] (u32 at targets_offset), grad [rows, vocab], loss_rows [rows],
// loss [1].

// Mirrors `Params` in engine/src/backend/gpu/train_loss.rs.
struct Params {
    rows: u32,
    vocab: u32,
    weight: f32,
    targets_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(5) var<storage, read_write> loss: array<f32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
var<workgroup> partial: array<f32, WG>;

fn reduce(lid: u32, take_max: bool) -> f32 {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            let a = partial[lid];
            let b = partial[lid + stride];
            partial[lid] = select(a + b, max(a, b), take_max);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Nobody overwrites partial before everyone has read the total.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // Uniform across the workgroup: every invocation reaches the barriers, so even unscored rows reduce.
    let row = min(wid.x + wid.y * nwg.x, p.rows - 1u);
    let live = wid.x + wid.y * nwg.x < p.rows;
    let base = row * p.vocab;
    var m = -3.4e38;
    for (var i = lid; i < p.vocab; i += WG) {
        m = max(m, logits[base + i]);
    }
    partial[lid] = m;
    m = reduce(lid, true);
    var s = 0.0;
    for (var i = lid; i < p.vocab; i += WG) {
        s += exp(logits[base + i] - m);
    }
    partial[lid] = s;
    let lse = m + log(reduce(lid, false));
    if (!live) {
        return;
    }
    let t = targets[p.targets_offset + row];
    let scored = t != NONE;
    for (var i = lid; i < p.vocab; i += WG) {
        let g = p.weight * exp(logits[base + i] - lse) - select(0.0, p.weight, i == t);
        grad[base + i] = select(0.0, g, scored);
    }
    if (lid == 0u) {
        loss_rows[row] = select(0.0, p.weight * (lse - logits[base + min(t, p.vocab - 1u)]), scored);
    }
}

@compute @workgroup_size(1)
fn total() {
    var sum = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        sum += loss_rows[r];
    }
    loss[0] = sum;
}
