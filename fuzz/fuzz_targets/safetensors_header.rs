#![no_main]

use engine::format::{safetensors::parse_header, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    // As a whole file: it may parse or fail, but never asks for bytes that are not there.
    if let Ok(Parsed::NeedMore(n)) = parse_header(data, len, 0) {
        panic!("whole file of {len} bytes, yet asked for {n}");
    }
    // As the prefix of a larger file: a request for more must grow the prefix and stay within the file.
    for file_len in [len + 1, len + (1 << 20), u64::MAX] {
        if let Ok(Parsed::NeedMore(n)) = parse_header(data, file_len, 0) {
            assert!(n > len && n <= file_len, "prefix {len} of {file_len}: asked for {n}");
        }
    }
    let _ = engine::format::safetensors::parse_index(data);
});
