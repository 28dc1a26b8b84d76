//! The W3C `traceparent` header a client may send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use platform::trace::TraceId;

fuzz_target!(|header: &str| {
    if let Some(id) = TraceId::from_traceparent(header) {
        // What the broker sends on names the same trace.
        let sent = id.to_traceparent();
        assert!(TraceId::from_traceparent(&sent) == Some(id), "{sent} names another trace");
    }
});
