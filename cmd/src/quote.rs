//! Shell quoting for display only: nothing here is ever given to a shell.

use std::borrow::Cow;
use std::ffi::OsStr;

/// `s` as a shell word: unchanged when it has only characters no shell
/// treats specially, otherwise single-quoted.
pub(crate) fn quote(s: &OsStr) -> Cow<'_, str> {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain {
        s
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;
    use std::ffi::OsStr;

    #[test]
    fn quotes_only_when_needed() {
        let q = |s: &str| quote(OsStr::new(s)).into_owned();
        assert_eq!(q("--image-path=/a/b"), "--image-path=/a/b");
        assert_eq!(q("/a b"), "'/a b'");
        assert_eq!(q(""), "''");
        assert_eq!(q("it's"), r"'it'\''s'");
        assert_eq!(q("$HOME"), "'$HOME'");
        assert_eq!(q("a*"), "'a*'");
        assert_eq!(q("~"), "'~'");
    }
}
