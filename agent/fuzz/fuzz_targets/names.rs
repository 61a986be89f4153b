//! Name validation (ID-14) against an independent oracle: a label is 1 to
//! 63 characters of `[a-z0-9-]`, starting and ending with `[a-z0-9]`; a
//! refusal names the field and the value.
#![no_main]

use ate_refagent::names::{validate_actor_id, validate_atespace, validate_namespace};
use libfuzzer_sys::fuzz_target;

fn oracle(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| ok(c) || *c == b'-')
        && ok(&b[0])
        && ok(&b[b.len() - 1])
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for (field, r) in [
        ("actor id", validate_actor_id(s)),
        ("atespace", validate_atespace(s)),
        ("namespace", validate_namespace(s)),
    ] {
        assert_eq!(r.is_ok(), oracle(s), "{field} {s:?}: {r:?}");
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(msg.contains(field), "{msg}");
        }
    }
});
