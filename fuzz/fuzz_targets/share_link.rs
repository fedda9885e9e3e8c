#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Links arrive as text: the URL bar has already turned any bytes into a string.
    let text = String::from_utf8_lossy(data);
    let _ = share::parse_fragment(&text);
    if let Ok(state) = share::decode(&text) {
        // What a link restores, shared again, must restore the same. Encoding may still refuse: an input packed more
        // tightly than miniz packs, or with omitted defaults, can re-encode past a cap.
        if let Ok(again) = share::encode(&state) {
            assert_eq!(share::decode(&again).as_ref(), Ok(&state));
        }
    }
    if let Ok(state) = share::from_file_json(data) {
        if let Ok(again) = share::to_file_json(&state) {
            assert_eq!(share::from_file_json(again.as_bytes()).as_ref(), Ok(&state));
        }
    }
});
