//! `${VAR}` substitution for fixtures. An unknown or unset variable is an
//! error naming it; `$$` is a literal `$`. Nothing else is special.

use std::collections::BTreeMap;

/// A substitution failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// `${NAME}` has no value.
    #[error("{source_name}: variable ${{{name}}} is not set (set: {known})")]
    Unset {
        /// The variable.
        name: String,
        /// Which fixture.
        source_name: String,
        /// The variables that are set, comma-separated.
        known: String,
    },
    /// `${` without a closing `}`, or a bad variable name.
    #[error("{source_name}: malformed placeholder at byte {offset}: {what}")]
    Malformed {
        /// Which fixture.
        source_name: String,
        /// Byte offset of the `$`.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// Replaces every `${NAME}` in `text` by `vars[NAME]`.
pub fn render(
    source_name: &str,
    text: &str,
    vars: &BTreeMap<&str, String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            offset += i + 2;
            rest = r;
            continue;
        }
        let malformed = |what| RenderError::Malformed {
            source_name: source_name.into(),
            offset: offset + i,
            what,
        };
        let Some(body) = after.strip_prefix('{') else {
            return Err(malformed(
                "`$` must start `${NAME}` (write `$$` for a literal `$`)",
            ));
        };
        let end = body
            .find('}')
            .ok_or_else(|| malformed("`${` without a closing `}`"))?;
        let name = &body[..end];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(malformed("variable names are A-Z, 0-9 and _"));
        }
        let value = vars.get(name).ok_or_else(|| RenderError::Unset {
            name: name.into(),
            source_name: source_name.into(),
            known: vars.keys().copied().collect::<Vec<_>>().join(", "),
        })?;
        out.push_str(value);
        let consumed = i + 2 + end + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every string inside a JSON document (keys stay as they are), so
/// values need no JSON escaping.
pub fn render_json(
    source_name: &str,
    doc: &serde_json::Value,
    vars: &BTreeMap<&str, String>,
) -> Result<serde_json::Value, RenderError> {
    use serde_json::Value;
    Ok(match doc {
        Value::String(s) => Value::String(render(source_name, s, vars)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| render_json(source_name, v, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut m = serde_json::Map::new();
            for (k, v) in o {
                m.insert(k.clone(), render_json(source_name, v, vars)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("A", "x".to_string()),
            ("PROBE_BIN", "/p \"q\"".to_string()),
        ])
    }

    #[test]
    fn substitutes_and_escapes_dollar() {
        assert_eq!(
            render("t", "a=${A}, $$5, ${A}${A}", &vars()).unwrap(),
            "a=x, $5, xx"
        );
        assert_eq!(render("t", "no vars", &vars()).unwrap(), "no vars");
    }

    #[test]
    fn unset_variable_is_named() {
        let e = render("probe.yaml", "x ${NAMESPACE} y", &vars()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "probe.yaml: variable ${NAMESPACE} is not set (set: A, PROBE_BIN)"
        );
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        for bad in ["${A", "$A", "${}", "${a}", "x $"] {
            assert!(
                matches!(
                    render("t", bad, &vars()),
                    Err(RenderError::Malformed { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn json_strings_are_rendered_without_escaping_trouble() {
        let doc: serde_json::Value =
            serde_json::from_str(r#"{"binary":"${PROBE_BIN}","n":1,"args":["${A}"]}"#).unwrap();
        let out = render_json("t", &doc, &vars()).unwrap();
        assert_eq!(out["binary"], "/p \"q\"");
        assert_eq!(out["args"][0], "x");
        assert_eq!(out["n"], 1);
    }

    #[test]
    fn the_local_probe_template_renders() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/local/probe-template.json"
        ))
        .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vars = BTreeMap::from([
            ("TEMPLATE", "probe-abc".to_string()),
            ("PROBE_BIN", "/x/ate-probe".to_string()),
            ("PROBE_FILE", "ate-probe".to_string()),
        ]);
        let out = render_json("probe-template.json", &doc, &vars).unwrap();
        assert_eq!(out["name"], "probe-abc");
        assert_eq!(out["args"][0], "/ate-probe");
    }
}
