//! CPU dequantisation against gguf-py's reference dequantisers (fixtures from
//! tests/fixtures/quant/gen_quant_fixtures.py). Our loops do the same f32 operations in the same order as ggml and
//! gguf-py (no fused multiply-add on either side), so every value must match bit for bit.

use engine::quant::{dequantize, dequantize_to_vec, quantize_q8_0, GgmlType};
use engine::Error;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/quant");

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Bitwise equality, except that any NaN matches any NaN: numpy keeps a signalling NaN's payload when widening
/// f16 to f32 while F16C hardware (used by the `half` crate) quiets it; both are NaN and nothing depends on payloads.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

const ALL: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

#[test]
fn dequantize_matches_gguf_py() {
    let mut failures = Vec::new();
    for ty in ALL {
        let raw = fixture(&format!("{}.bin", ty.name()));
        let expected = f32s(&fixture(&format!("{}.f32", ty.name())));
        assert!(
            expected.len() >= 4 * ty.block_size(),
            "{}: fixture too small",
            ty.name()
        );
        let got = dequantize_to_vec(ty, &raw, expected.len())
            .unwrap_or_else(|e| panic!("{}: dequantize failed: {e}", ty.name()));
        if let Some(i) = (0..expected.len()).find(|&i| !same(got[i], expected[i])) {
            failures.push(format!(
                "{}: first mismatch at index {i} (block {}): got {} ({:#010x}), expected {} ({:#010x})",
                ty.name(),
                i / ty.block_size(),
                got[i],
                got[i].to_bits(),
                expected[i],
                expected[i].to_bits()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "dequantisation differs from gguf-py:\n{}",
        failures.join("\n")
    );
}

#[test]
fn dequantize_into_a_slice_matches_to_vec() {
    let raw = fixture("Q6_K.bin");
    let mut out = vec![f32::NAN; raw.len() / 210 * 256];
    dequantize(GgmlType::Q6K, &raw, &mut out).unwrap();
    assert_eq!(
        out,
        dequantize_to_vec(GgmlType::Q6K, &raw, out.len()).unwrap()
    );
}

#[test]
fn quantize_q8_0_matches_gguf_py_bytes() {
    let input = f32s(&fixture("Q8_0.input.f32"));
    let expected = fixture("Q8_0.bin");
    let got = quantize_q8_0(&input).unwrap();
    // Q8_0.bin holds gguf-py's quantisation of the input first, then random blocks.
    let expected = &expected[..got.len()];
    if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
        panic!(
            "Q8_0 byte {i} (block {}, offset {}): got {:#04x}, expected {:#04x}",
            i / 34,
            i % 34,
            got[i],
            expected[i]
        );
    }
    // And the round trip stays within half a quantisation step of the input.
    let back = dequantize_to_vec(GgmlType::Q8_0, &got, input.len()).unwrap();
    for (block, (x, y)) in input.chunks(32).zip(back.chunks(32)).enumerate() {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let step = amax / 127.0;
        for (a, b) in x.iter().zip(y) {
            assert!(
                (a - b).abs() <= step * 0.5 + amax * 1e-3,
                "block {block}: {a} -> {b}"
            );
        }
    }
}

#[test]
fn quantize_q8_0_rejects_partial_blocks_and_handles_zeros() {
    assert!(matches!(
        quantize_q8_0(&[1.0; 33]),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(quantize_q8_0(&[]).unwrap(), Vec::<u8>::new());
    assert_eq!(quantize_q8_0(&[0.0; 32]).unwrap(), vec![0u8; 34]);
}

#[test]
fn wrong_lengths_are_errors() {
    for ty in ALL {
        let bs = ty.block_size();
        let ts = ty.type_size();
        let bytes = vec![0u8; 2 * ts];
        // One byte short, one byte over, one block's values too many.
        for (len, elements) in [(2 * ts - 1, 2 * bs), (2 * ts + 1, 2 * bs), (2 * ts, 3 * bs)] {
            let r = dequantize_to_vec(ty, &vec![0u8; len], elements);
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{} len {len} elements {elements}",
                ty.name()
            );
        }
        if bs > 1 {
            let mut out = vec![0f32; bs + 1];
            let r = dequantize(ty, &vec![0u8; ts], &mut out);
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{}: partial block",
                ty.name()
            );
        }
        // A huge claimed element count is rejected before anything is allocated.
        let r = dequantize_to_vec(ty, &bytes, usize::MAX / 2 / bs * bs);
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "{}: huge count",
            ty.name()
        );
        assert_eq!(dequantize_to_vec(ty, &[], 0).unwrap(), Vec::<f32>::new());
    }
}
