//! Any upload as the organisation CSV (`id,kind,name,parent`) and as the
//! members CSV: refused with an error or parsed, never a panic (a header
//! that names columns twice, ragged rows, invalid UTF-8, a lone BOM...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sabha_signaling::{members, org};

fuzz_target!(|data: &[u8]| {
    if let Ok(units) = org::parse_csv(data) {
        // Parsing trims fields and maps an empty parent to `None`.
        for unit in &units {
            assert_ne!(unit.parent.as_deref(), Some(""));
            assert_eq!(unit.id, unit.id.trim());
        }
    }
    let _ = members::parse_csv(data);
});
