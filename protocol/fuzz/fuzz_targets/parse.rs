//! Any bytes through every reader: no panic, bounded time; and whatever parses strictly writes
//! back to a document that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{CheckData, CheckResult, Document, FixData, FixResult};

fn round_trip<T: Document + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(doc) = T::validate(bytes) {
        let xml = doc.to_xml().expect("a validated document can be written");
        assert_eq!(T::validate(&xml).expect("written document validates"), doc);
    }
    let _ = T::parse(bytes);
}

fuzz_target!(|bytes: &[u8]| {
    round_trip::<FixData>(bytes);
    round_trip::<FixResult>(bytes);
    round_trip::<CheckData>(bytes);
    round_trip::<CheckResult>(bytes);
});
