//! Validates objects against upstream's CRD schemas, the way the API server
//! does for an applied ActorTemplate or WorkerPool: the `openAPIV3Schema` of
//! `../shared/upstream/crds/ate.dev_<plural>.yaml` (Agent Substrate at
//! 86e138f6, `manifests/ate-install/generated/`), read at test time.
//!
//! Checked: `type`, `required`, `enum`, `pattern`, `minLength`/`maxLength`,
//! `minimum`/`maximum`, `maxItems`, unknown fields (kubectl validates
//! strictly by default: an unknown field is an error, not a warning) and the
//! one CEL rule the probe's fields carry, `self.contains('@')` (images must
//! be digest-pinned). Other CEL rules are not evaluated. Error texts follow
//! the API server's: `spec.pauseImage: Required value`, `strict decoding
//! error: unknown field "spec.x"`.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// Where the upstream CRDs are (`/work/shared/upstream/crds` from the
/// repository root's parent).
pub fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/upstream/crds")
}

/// The `openAPIV3Schema` of the `ate.dev` CRD for `kind`
/// (`ActorTemplate`, `WorkerPool`, `SandboxConfig`), or `None` for a kind
/// that is not one of them.
pub fn schema_for(kind: &str) -> Option<Value> {
    let plural = match kind {
        "ActorTemplate" => "actortemplates",
        "WorkerPool" => "workerpools",
        "SandboxConfig" => "sandboxconfigs",
        _ => return None,
    };
    let path = crd_dir().join(format!("ate.dev_{plural}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the upstream CRD {}: {e}", path.display()));
    let crd: Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    crd.pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
}

/// Every violation of `schema` by `obj`, as the API server words them.
pub fn validate(schema: &Value, obj: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, obj, "", &mut errors);
    errors
}

/// Validates every `ate.dev` document of a multi-document YAML manifest;
/// other kinds pass. Returns `(kind/name, error)` pairs.
pub fn validate_manifest(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let v: Value = match serde::Deserialize::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                out.push(format!("error converting YAML to JSON: {e}"));
                continue;
            }
        };
        if v.is_null() {
            continue;
        }
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let name = v
            .pointer("/metadata/name")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        if let Some(schema) = schema_for(kind) {
            for e in validate(&schema, &v) {
                out.push(format!("{kind} {name:?} is invalid: {e}"));
            }
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let shown = if path.is_empty() { "<root>" } else { path };
    if let Some(t) = schema.get("type").and_then(|t| t.as_str()) {
        let got = type_name(v);
        let fits = got == t || (t == "number" && got == "integer");
        if !fits {
            errors.push(format!(
                "{shown}: Invalid value: \"{got}\": {shown} in body must be of type {t}"
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(|e| e.as_array()) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            errors.push(format!(
                "{shown}: Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ));
        }
    }
    match v {
        Value::String(s) => {
            if let Some(p) = schema.get("pattern").and_then(|p| p.as_str()) {
                let re = regex::Regex::new(p).expect("a CRD pattern is a regex");
                if !re.is_match(s) {
                    errors.push(format!(
                        "{shown}: Invalid value: {s:?}: {shown} in body should match '{p}'"
                    ));
                }
            }
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(|m| m.as_u64()) {
                if len < min {
                    errors.push(format!("{shown}: Invalid value: {s:?}: {shown} in body should be at least {min} chars long"));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(|m| m.as_u64()) {
                if len > max {
                    errors.push(format!(
                        "{shown}: Too long: may not be more than {max} bytes"
                    ));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").and_then(|m| m.as_f64()) {
                if x < min {
                    errors.push(format!("{shown}: Invalid value: {n}: {shown} in body should be greater than or equal to {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(|m| m.as_f64()) {
                if x > max {
                    errors.push(format!("{shown}: Invalid value: {n}: {shown} in body should be less than or equal to {max}"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(|m| m.as_u64()) {
                if items.len() as u64 > max {
                    errors.push(format!(
                        "{shown}: Too many: {}: must have at most {max} items",
                        items.len()
                    ));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            for r in schema
                .get("required")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
            {
                if !map.contains_key(r) {
                    errors.push(format!("{}: Required value", join(path, r)));
                }
            }
            let props = schema.get("properties").and_then(|p| p.as_object());
            let additional = schema.get("additionalProperties");
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(|p| p.as_bool())
                .unwrap_or(false);
            for (k, child) in map {
                let child_path = join(path, k);
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) => walk(s, child, &child_path, errors),
                    (None, Some(s)) if s.is_object() => walk(s, child, &child_path, errors),
                    // An object schema without properties (metadata) takes
                    // anything; so does preserve-unknown-fields.
                    (None, _) if props.is_none() || preserve => {}
                    (None, _) => errors.push(format!(
                        "strict decoding error: unknown field \"{child_path}\""
                    )),
                }
            }
        }
        _ => {}
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let text = rule.get("rule").and_then(|r| r.as_str()).unwrap_or("");
        let message = rule.get("message").and_then(|r| r.as_str()).unwrap_or(text);
        if text == "self.contains('@')" {
            if let Value::String(s) = v {
                if !s.contains('@') {
                    errors.push(format!("{shown}: Invalid value: \"string\": {message}"));
                }
            }
        }
    }
}
