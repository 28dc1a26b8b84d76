//! A WebSocket JSON frame from a client, as the broker's socket loop reads it.
#![no_main]

use broker::live::frames::Inbound;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The socket loop only sees text frames, which are UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = serde_json::from_str::<Inbound>(text) {
        // Whatever parses is one of the known frames, and parses the same again.
        let again = serde_json::from_str::<Inbound>(text).expect("parsing is deterministic");
        assert_eq!(frame, again);
    }
});
