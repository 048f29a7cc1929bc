//! The first line of a script or a library, `#!lua …`, as Redis 7.0 reads it: an `EVAL`
//! body may start with `#!lua flags=…` (then its flags, not its commands, say whether it
//! writes), and a `FUNCTION LOAD` library must start with `#!lua name=…`.

use crate::state::commands::Fail;

/// The library name of a `#!lua name=…` first line.
pub fn library_name(code: &[u8]) -> Result<String, Fail> {
    let first = code.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let Some(shebang) = first.strip_prefix(b"#!") else {
        return Err("ERR Missing library metadata".into());
    };
    let shebang = String::from_utf8_lossy(shebang);
    let mut parts = shebang.split_whitespace();
    let engine = parts.next().unwrap_or_default();
    if engine != "lua" {
        return Err(format!("ERR Engine '{engine}' not found").into());
    }
    let mut name = None;
    for part in parts {
        match part.strip_prefix("name=") {
            Some(value) => name = Some(value.to_string()),
            None => return Err(format!("ERR Invalid metadata value given: {part}").into()),
        }
    }
    let name = name.ok_or(Fail::from("ERR Library name was not given"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long".into());
    }
    Ok(name)
}

/// Script flags a `#!lua flags=…` first line may name (Redis 7.0's `scripts_flags_def`).
const SCRIPT_FLAGS: [&str; 5] = [
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

/// An `EVAL` body's shebang (`#!lua flags=no-writes,…`), as Redis 7.0 reads it: where the
/// code to compile starts (the first line's newline, so line numbers stay) and whether the
/// script declared `no-writes`. A body without `#!` starts at 0 and may write.
pub fn eval_flags(body: &[u8]) -> Result<(usize, bool), Fail> {
    if !body.starts_with(b"#!") {
        return Ok((0, false));
    }
    let Some(end) = body.iter().position(|byte| *byte == b'\n') else {
        return Err("ERR Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split_whitespace();
    let engine = parts.next().unwrap_or_default();
    if engine != "#!lua" {
        return Err(format!("ERR Unexpected engine in script shebang: {engine}").into());
    }
    let mut no_writes = false;
    for part in parts {
        let Some(flags) = part.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {part}").into());
        };
        for flag in flags.split(',').filter(|flag| !flag.is_empty()) {
            if !SCRIPT_FLAGS.contains(&flag) {
                return Err(format!("ERR Unexpected flag in script shebang: {flag}").into());
            }
            no_writes |= flag == "no-writes";
        }
    }
    Ok((end, no_writes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> String {
        eval_flags(body.as_bytes()).unwrap_err().0.into_owned()
    }

    #[test]
    fn an_eval_body_without_a_shebang_compiles_whole_and_may_write() {
        assert_eq!(eval_flags(b"return 1").unwrap(), (0, false));
    }

    #[test]
    fn an_eval_shebang_keeps_the_line_numbers_and_reads_no_writes() {
        assert_eq!(eval_flags(b"#!lua\nreturn 1").unwrap(), (5, false));
        assert_eq!(
            eval_flags(b"#!lua flags=allow-oom,no-writes\nreturn 1").unwrap(),
            (31, true)
        );
        assert_eq!(eval_flags(b"#!lua flags=\nreturn 1").unwrap(), (12, false));
    }

    #[test]
    fn a_bad_eval_shebang_gets_redis_s_error() {
        assert_eq!(refusal("#!lua"), "ERR Invalid script shebang");
        assert_eq!(
            refusal("#!not-lua\nreturn 1"),
            "ERR Unexpected engine in script shebang: #!not-lua"
        );
        assert_eq!(
            refusal("#!lua badger=data\n"),
            "ERR Unknown lua shebang option: badger=data"
        );
        assert_eq!(
            refusal("#!lua flags=allow-oom,what?\n"),
            "ERR Unexpected flag in script shebang: what?"
        );
    }
}
