//! An event envelope as the listener takes it from RabbitMQ.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((_id, envelope)) = platform::events::envelope::decode(bytes) {
        // A decoded envelope has a payload, and a time or none.
        assert!(envelope.payload.is_some());
        let _ = platform::events::envelope::occurred_at(&envelope);
    }
});
