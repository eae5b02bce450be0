//! Component arguments, as MicroK8s keeps them: `args/<component>` holds one upstream-style
//! flag a line (`--flag=value`, or `--flag` alone for true), `#` starts a comment, and
//! `${SNAP_DATA}` / `${SNAP_COMMON}` / `${SNAP}` expand. Flags given on the command line
//! follow the file's and win.

use std::path::Path;

/// A flag file or command line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("{file}:{line}: expected '--flag=value', found '{text}'")]
    Syntax {
        file: String,
        line: usize,
        text: String,
    },
    #[error(transparent)]
    Io(#[from] super::fsutil::IoError),
    #[error("{origin}: unknown flag '--{flag}'")]
    Unknown { origin: String, flag: String },
    #[error("{origin}: invalid value '{value}' for --{flag}: {why}")]
    Invalid {
        origin: String,
        flag: String,
        value: String,
        why: String,
    },
}

/// One flag and where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: String,
    pub origin: String,
}

/// Values substituted for `${NAME}` in flag values.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub snap: String,
    pub snap_data: String,
    pub snap_common: String,
}

impl Vars {
    pub fn expand(&self, v: &str) -> String {
        v.replace("${SNAP_DATA}", &self.snap_data)
            .replace("${SNAP_COMMON}", &self.snap_common)
            .replace("${SNAP}", &self.snap)
    }
}

fn parse_flag(text: &str, origin: String, vars: &Vars) -> Option<Flag> {
    let body = text.strip_prefix("--")?;
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, v.trim_matches('"')),
        None => (body, "true"),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return None;
    }
    Some(Flag {
        name: name.to_string(),
        value: vars.expand(value),
        origin,
    })
}

/// Reads `path` if it exists (a missing file is no flags), then appends `cli` flags.
pub fn load(path: &Path, cli: &[String], vars: &Vars) -> Result<Vec<Flag>, ArgsError> {
    let mut flags = Vec::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            for (i, raw) in text.lines().enumerate() {
                let line = raw.split('#').next().unwrap_or_default().trim();
                if line.is_empty() {
                    continue;
                }
                let origin = format!("{}:{}", path.display(), i + 1);
                flags.push(
                    parse_flag(line, origin, vars).ok_or_else(|| ArgsError::Syntax {
                        file: path.display().to_string(),
                        line: i + 1,
                        text: line.to_string(),
                    })?,
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(cause) => {
            return Err(super::fsutil::io_err("read", path)(cause).into());
        }
    }
    for (i, arg) in cli.iter().enumerate() {
        let origin = format!("command line argument {}", i + 1);
        flags.push(
            parse_flag(arg, origin, vars).ok_or_else(|| ArgsError::Syntax {
                file: "command line".into(),
                line: i + 1,
                text: arg.clone(),
            })?,
        );
    }
    Ok(flags)
}

/// Sets `--name=value` in an args file (replacing every line that sets it, or appending one),
/// keeping comments and other lines; the file is replaced atomically. `None` removes the flag.
pub fn set_flag(path: &Path, name: &str, value: Option<&str>) -> Result<(), ArgsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(cause) => return Err(super::fsutil::io_err("read", path)(cause).into()),
    };
    let sets = |line: &str| {
        let flag = line.split('#').next().unwrap_or_default().trim();
        flag.strip_prefix("--")
            .and_then(|f| f.split(['=', ' ']).next())
            .is_some_and(|n| n == name)
    };
    let wanted = value.map(|v| format!("--{name}={v}"));
    let mut out = Vec::new();
    let mut placed = false;
    for line in text.lines() {
        if !sets(line) {
            out.push(line.to_string());
        } else if let Some(w) = wanted.as_ref().filter(|_| !placed) {
            out.push(w.clone());
            placed = true;
        }
    }
    if let Some(w) = wanted.filter(|_| !placed) {
        out.push(w);
    }
    let mut body = out.join("\n");
    body.push('\n');
    super::fsutil::write_atomic(path, body.as_bytes(), 0o644)
        .map_err(|cause| super::fsutil::io_err("write", path)(cause).into())
}

/// A comma-separated flag value, blanks dropped (`--etcd-servers=a,b`).
pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A Go duration: one or more number-unit pairs (`500ms`, `30s`, `5m`, `1h`, `1m30s`).
pub fn parse_duration(v: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("'{v}' is not a duration like 5m");
    let mut rest = v;
    let mut total = std::time::Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let d = match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
            "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(d);
        rest = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn set_flag_replaces_appends_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kube-apiserver");
        std::fs::write(
            &f,
            "# header\n--a=1\n--authorization-mode=AlwaysAllow # why\n--b\n",
        )
        .unwrap();
        super::set_flag(&f, "authorization-mode", Some("RBAC,Node")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "# header\n--a=1\n--authorization-mode=RBAC,Node\n--b\n"
        );
        super::set_flag(&f, "c", Some("x")).unwrap();
        super::set_flag(&f, "a", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "# header\n--authorization-mode=RBAC,Node\n--b\n--c=x\n"
        );
    }

    #[test]
    fn go_durations() {
        use std::time::Duration;
        assert_eq!(super::parse_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(
            super::parse_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            super::parse_duration("1h2m3s"),
            Ok(Duration::from_secs(3723))
        );
        assert!(super::parse_duration("5x").is_err());
        assert!(super::parse_duration("").is_err());
        assert!(super::parse_duration("m").is_err());
    }

    use super::*;

    #[test]
    fn file_then_command_line_with_expansion() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("datastore");
        std::fs::write(&p, "# comment\n--storage-dir=${SNAP_DATA}/db\n\n--debug\n").unwrap();
        let vars = Vars {
            snap_data: "/data".into(),
            ..Default::default()
        };
        let flags = load(&p, &["--storage-dir=/x".into()], &vars).unwrap();
        let pairs: Vec<(&str, &str)> = flags
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("storage-dir", "/data/db"),
                ("debug", "true"),
                ("storage-dir", "/x")
            ]
        );
        std::fs::write(&p, "storage-dir=/y\n").unwrap();
        let err = load(&p, &[], &vars).unwrap_err().to_string();
        assert!(
            err.ends_with(":1: expected '--flag=value', found 'storage-dir=/y'"),
            "{err}"
        );
    }
}
