//! Parsing of `/proc/self/mountinfo` (proc(5)); the same rules as the
//! probe's `probe/src/mountinfo.rs` (the probe depends on nothing of ours).
//!
//! A line is: mount ID, parent ID, major:minor, root, mount point, mount
//! options, zero or more optional fields, a lone `-`, fs type, source, super
//! options. Paths escape space, tab, newline and backslash as `\ooo` octal.

pub use crate::Mount;

/// Parses one line of mountinfo.
pub fn parse_line(line: &str) -> Result<Mount, String> {
    let fields: Vec<&str> = line.split(' ').collect();
    // The separator comes after the six mandatory fields and the optional ones.
    let sep = fields
        .iter()
        .skip(6)
        .position(|f| *f == "-")
        .map(|i| i + 6)
        .ok_or_else(|| "no \" - \" separator after the sixth field".to_string())?;
    if fields.len() < sep + 4 {
        return Err(format!(
            "{} field(s) after the separator, want 3",
            fields.len() - sep - 1
        ));
    }
    Ok(Mount {
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        mount_options: fields[5].to_string(),
        fs_type: unescape(fields[sep + 1]),
        source: unescape(fields[sep + 2]),
        super_options: fields[sep + 3].to_string(),
    })
}

/// Parses the whole text: the mounts whose mount point is `dir` or lies
/// beneath it (for each of `dirs`), and the first malformed line, if any.
pub fn mounts_under(text: &str, dirs: &[String]) -> (Vec<Mount>, Option<String>) {
    let mut mounts = Vec::new();
    let mut first_error = None;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        match parse_line(line) {
            Ok(m) if dirs.iter().any(|d| is_under(&m.mount_point, d)) => mounts.push(m),
            Ok(_) => {}
            Err(e) => {
                first_error
                    .get_or_insert_with(|| format!("mountinfo line {}: {e}: {line:?}", i + 1));
            }
        }
    }
    (mounts, first_error)
}

/// Whether `path` is `dir` or lies beneath it (lexically).
pub fn is_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir
        || dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Decodes the kernel's `\ooo` escapes.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: u8| (b'0'..=b'7').contains(&c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|&c| octal(c)) {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, &c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_optional_fields() {
        let m = parse_line(
            "36 35 98:0 /ids/a1 /run/ate ro,relatime - ext4 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(
            m,
            Mount {
                mount_point: "/run/ate".into(),
                fs_type: "ext4".into(),
                mount_options: "ro,relatime".into(),
                super_options: "rw,errors=continue".into(),
                source: "/dev/root".into(),
                root: "/ids/a1".into(),
            }
        );
    }

    #[test]
    fn several_optional_fields_and_escapes() {
        let m = parse_line(
            r"40 1 0:5 /a\040b /run/ate/x\134y rw shared:1 master:2 - 9p none\011z rw,trans=fd",
        )
        .unwrap();
        assert_eq!(m.root, "/a b");
        assert_eq!(m.mount_point, r"/run/ate/x\y");
        assert_eq!(m.fs_type, "9p");
        assert_eq!(m.source, "none\tz");
        assert_eq!(m.super_options, "rw,trans=fd");
    }

    #[test]
    fn newline_escape_in_a_mount_point() {
        let m = parse_line(r"7 1 0:9 / /run/ate/a\012b ro - tmpfs x ro").unwrap();
        assert_eq!(m.mount_point, "/run/ate/a\nb");
        assert!(m.read_only());
    }

    #[test]
    fn malformed_lines() {
        assert!(parse_line("1 2 3:4 / /x rw").is_err());
        assert!(parse_line("1 2 3:4 / /x rw - ext4").is_err());
        // A trailing backslash or short escape is kept as is.
        assert_eq!(unescape(r"a\04"), r"a\04");
        assert_eq!(unescape(r"a\"), r"a\");
    }

    #[test]
    fn filtering() {
        let text = "1 0 0:1 / / rw - overlay none rw\n\
                    2 1 0:2 / /run/ate ro - tmpfs none ro\n\
                    3 1 0:3 / /run/ate/sub rw - tmpfs none rw\n\
                    4 1 0:4 / /run/atex rw - tmpfs none rw\n\
                    garbage\n";
        let (m, err) = mounts_under(text, &["/run/ate/".to_string()]);
        let points: Vec<_> = m.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/run/ate", "/run/ate/sub"]);
        assert!(err.unwrap().starts_with("mountinfo line 5:"));
        assert!(is_under("/anything", "/"));
    }
}
