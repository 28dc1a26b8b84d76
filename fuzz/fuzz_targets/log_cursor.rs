//! The `cursor` of `GET /api/logs`, passed back by clients.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logger::domain::Cursor;

fuzz_target!(|text: &str| {
    if let Ok(cursor) = Cursor::decode(text) {
        // A cursor that decodes encodes to one naming the same place.
        let again = Cursor::decode(&cursor.encode()).expect("an encoded cursor decodes");
        assert_eq!(again.encode(), cursor.encode());
    }
});
