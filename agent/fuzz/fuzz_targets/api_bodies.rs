//! The control API's request bodies: any bytes either fail to parse or
//! parse to a value that serialises and parses back to itself; a parsed
//! template spec is checked by the engine's own validation, which never
//! panics and accepts only what the API documents (a valid name, absolute
//! binary and args[0], port 1..=65535, KEY=VALUE env entries).
#![no_main]

use ate_agent_api::{IdentityRewrite, NewActor, NewAtespace, TemplateSpec};
use ate_refagent::engine::Engine;
use ate_refagent::names::validate_template_name;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let again: T = serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(again, v);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    round_trip::<NewActor>(data);
    round_trip::<NewAtespace>(data);
    round_trip::<IdentityRewrite>(data);
    if let Some(mut spec) = round_trip::<TemplateSpec>(data) {
        if Engine::validate_spec(&mut spec).is_ok() {
            assert!(validate_template_name(&spec.name).is_ok(), "{spec:?}");
            assert!(spec.binary.is_absolute() && spec.port != 0, "{spec:?}");
            assert!(spec.args.first().is_some_and(|a| a.starts_with('/')), "{spec:?}");
            assert!(spec.env.iter().all(|e| e.contains('=') && !e.starts_with('=')), "{spec:?}");
        }
    }
});
