//! Host header parsing (ID-15): never panics; whatever it accepts is a
//! valid actor address whose canonical name parses back to itself.
#![no_main]

use ate_refagent::names::{actor_host, parse_actor_host, validate_actor_id, validate_atespace};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = parse_actor_host(host) {
        assert!(validate_actor_id(&addr.actor).is_ok(), "accepted bad actor {addr:?} from {host:?}");
        assert!(validate_atespace(&addr.atespace).is_ok(), "accepted bad atespace {addr:?} from {host:?}");
        let canonical = actor_host(&addr.actor, &addr.atespace);
        let again = parse_actor_host(&canonical).expect("the canonical name parses");
        assert_eq!(again, addr, "{host:?} -> {canonical:?}");
        for variant in [format!("{canonical}."), format!("{canonical}:80")] {
            assert_eq!(parse_actor_host(&variant).ok(), Some(addr.clone()), "{variant:?}");
        }
    } else if let Err(e) = parse_actor_host(host) {
        // Every refusal explains itself.
        assert!(!e.explain().is_empty());
    }
});
