//! A line of the plain-text room protocol (`SEND <message>`).
#![no_main]

use broker::live::frames::{TextCommand, parse_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    if let Ok(TextCommand::Send(message)) = parse_text(line) {
        // The message is part of the line, and never blank.
        assert!(line.contains(message));
        assert!(!message.trim().is_empty());
    }
});
