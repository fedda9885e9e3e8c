// Top-k: the k best (id, value) pairs of a vector, best first; equal values by lower id; NaN counts as -inf.
// Values are compared as order-preserving u32 keys (`key_of`), with the id as tie-break, so the order is total and
// the result is exactly that of a host sort.
//
// Each workgroup streams its slice of the input and keeps its best KP (k rounded up to a power of two, ≤ 256)
// sorted at the front of a CAP-entry workgroup buffer. An element joins the buffer only when it beats the KP-th best
// so far; the buffer is bitonic-sorted (and cut back to KP) whenever the next round could overflow it, and at the
// end. After the first rounds few elements beat the threshold, so most of the slice is a plain coalesced read.
//   Pass 1 (PAIRS = false, LAST = false): the input is f32 logits src[offset .. offset + n]; workgroup g takes
//     elements [g * slice, (g + 1) * slice) and writes its k best as (id, key) to out[(g * k + j) * 2 ..].
//   Pass 2 (PAIRS = true, LAST = true): one workgroup reads the n (id, key) pairs of pass 1 and keeps the best k.
//   One pass (PAIRS = false, LAST = true) serves inputs one workgroup takes whole.
// The last pass writes out[2j] = id, out[2j + 1] = f32 bits of the value (-inf for NaN); when n < k the missing
// pairs are (0xffffffff, -inf).
// Bindings: src [offset + n] f32 (read as u32 bits) or [n, 2] u32 pairs; out [groups, k, 2] or [k, 2] u32.

struct Params {
    n: u32,
    offset: u32,
    slice: u32,
    k: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
const CAP: u32 = 1024u;
// An empty slot: key 0 is below every real key (-inf is 0x007fffff), and its id loses every tie.
const NONE: u32 = 0xffffffffu;
const NEG_INF: u32 = 0xff800000u;

var<workgroup> keys: array<u32, CAP>;
var<workgroup> ids: array<u32, CAP>;
var<workgroup> count: atomic<u32>;
var<workgroup> used: u32;

// f32 bits to a key whose unsigned order is the float order (-0 below +0, as f32::total_cmp); NaN becomes -inf.
fn key_of(raw: u32) -> u32 {
    var bits = raw;
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        bits = NEG_INF;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn bits_of(key: u32) -> u32 {
    if ((key & 0x80000000u) != 0u) {
        return key & 0x7fffffffu;
    }
    if (key == 0u) {
        return NEG_INF;
    }
    return ~key;
}

// Whether (ka, ia) ranks before (kb, ib).
fn better(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// Sorts the whole buffer best first (bitonic network; CAP / 2 compare-exchanges per step).
fn sort_buffer(lid: u32) {
    for (var size = 2u; size <= CAP; size = size << 1u) {
        for (var stride = size >> 1u; stride > 0u; stride = stride >> 1u) {
            for (var t = lid; t < CAP / 2u; t += WG) {
                let i = ((t & ~(stride - 1u)) << 1u) | (t & (stride - 1u));
                let j = i + stride;
                let ki = keys[i];
                let ii = ids[i];
                let kj = keys[j];
                let ij = ids[j];
                let best_first = (i & size) == 0u;
                if (select(better(ki, ii, kj, ij), better(kj, ij, ki, ii), best_first)) {
                    keys[i] = kj;
                    ids[i] = ij;
                    keys[j] = ki;
                    ids[j] = ii;
                }
            }
            workgroupBarrier();
        }
    }
}

// Sorts, then empties every slot after the best KP.
fn compact(lid: u32) {
    sort_buffer(lid);
    for (var s = KP + lid; s < CAP; s += WG) {
        keys[s] = 0u;
        ids[s] = NONE;
    }
    if (lid == 0u) {
        atomicStore(&count, KP);
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    for (var s = lid; s < CAP; s += WG) {
        keys[s] = 0u;
        ids[s] = NONE;
    }
    if (lid == 0u) {
        atomicStore(&count, KP);
    }
    workgroupBarrier();

    let start = g * p.slice;
    let end = min(start + p.slice, p.n);
    for (var base = start; base < end; base += WG) {
        // Slots below KP change only in `compact`, behind barriers: the threshold is stable during a round.
        let tk = keys[KP - 1u];
        let ti = ids[KP - 1u];
        let i = base + lid;
        if (i < end) {
            var key: u32;
            var id: u32;
            if (PAIRS) {
                id = src[2u * i];
                key = src[2u * i + 1u];
            } else {
                id = i;
                key = key_of(src[p.offset + i]);
            }
            if (better(key, id, tk, ti)) {
                let slot = atomicAdd(&count, 1u);
                keys[slot] = key;
                ids[slot] = id;
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            used = atomicLoad(&count);
        }
        // At most WG more elements join per round: cut back before the buffer could overflow.
        if (workgroupUniformLoad(&used) + WG > CAP) {
            compact(lid);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        used = atomicLoad(&count);
    }
    if (workgroupUniformLoad(&used) > KP) {
        sort_buffer(lid);
    }

    for (var t = lid; t < p.k; t += WG) {
        if (LAST) {
            out[2u * t] = ids[t];
            out[2u * t + 1u] = bits_of(keys[t]);
        } else {
            let o = (g * p.k + t) * 2u;
            out[o] = ids[t];
            out[o + 1u] = keys[t];
        }
    }
}
