//! A cluster's name when none is given: derived from its command, after the script an
//! interpreter runs (`node server.js` → `server`), after the command a shell runs
//! (`sh -c 'exec gunicorn app:app'` → `gunicorn`), else after the program (`gunicorn`).

use std::ffi::OsString;

/// Whether `name` may name a cluster (it names the control socket's file): 1 to 64 of
/// `A-Z a-z 0-9 . _ -`.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Programs that run a script named in their arguments: a cluster of `node server.js` is named
/// after the script (`server`), not after the interpreter every Node app shares.
const INTERPRETERS: &[&str] = &[
    "node", "nodejs", "bun", "deno", "python", "python3", "ruby", "perl", "php",
];

/// Shells: a cluster of `sh -c 'exec gunicorn app:app'` is named after what the shell runs,
/// one of `sh start.sh` after its script.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh"];

/// `server` for `node server.js`, `python3 -m app.main` → `app.main`, `gunicorn` for
/// `/usr/bin/gunicorn app:app` and for `sh -c 'PORT=1 exec gunicorn app:app'`; anything a name
/// may not hold becomes `-`.
pub(super) fn name_from_command(command: &[OsString]) -> String {
    if let Some(inner) = shell_command(command) {
        return name_from_command(&inner);
    }
    let file_name = |part: &OsString, stem: bool| {
        let path = std::path::Path::new(part);
        let name = if stem {
            path.file_stem()
        } else {
            path.file_name()
        };
        name.map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let program = file_name(&command[0], false);
    // `python3.12` runs scripts as `python3` does.
    let family = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let script = (INTERPRETERS.contains(&family) || SHELLS.contains(&family))
        .then(|| script_name(&command[1..]))
        .flatten();
    let base = match script {
        Some(Script::Module(module)) => module.to_string_lossy().into_owned(),
        Some(Script::File(path)) => file_name(path, true),
        None => program,
    };
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "herdsman".into()
    } else {
        name
    }
}

/// The command line a shell's `-c` runs, as words, without the `exec` and the variable
/// assignments before its program; `None` if `command` is no shell running one.
fn shell_command(command: &[OsString]) -> Option<Vec<OsString>> {
    let program = std::path::Path::new(command.first()?).file_name()?;
    if !SHELLS.contains(&&*program.to_string_lossy()) {
        return None;
    }
    let mut args = command[1..].iter().map(|arg| arg.to_string_lossy());
    // `-c`, or options that end with it (`-ec`, `-lc`).
    args.find(|arg| arg.starts_with('-') && !arg.starts_with("--") && arg.ends_with('c'))?;
    let line = args.next()?;
    let words: Vec<OsString> = line
        .split_whitespace()
        .skip_while(|word| *word == "exec" || word.contains('='))
        .map(OsString::from)
        .collect();
    (!words.is_empty()).then_some(words)
}

enum Script<'a> {
    File(&'a OsString),
    /// `python -m MODULE`.
    Module(&'a OsString),
}

/// The script an interpreter runs: its first argument that is not an option (after `run`, for
/// `deno run` and `bun run`), or the module of `-m`.
fn script_name(args: &[OsString]) -> Option<Script<'_>> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "-m" {
            return args.next().map(Script::Module);
        }
        if text == "run" || text.starts_with('-') {
            continue;
        }
        return Some(Script::File(arg));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let name = |command: &[&str]| {
            let command: Vec<OsString> = command.iter().map(OsString::from).collect();
            name_from_command(&command)
        };
        assert_eq!(name(&["/usr/bin/node"]), "node");
        assert_eq!(name(&["node", "server.js"]), "server");
        assert_eq!(
            name(&["node", "--max-old-space-size=512", "src/app.mjs"]),
            "app"
        );
        assert_eq!(name(&["/usr/bin/python3.12", "-u", "api.py"]), "api");
        assert_eq!(name(&["python3", "-m", "http.server"]), "http.server");
        assert_eq!(name(&["deno", "run", "--allow-net", "main.ts"]), "main");
        assert_eq!(name(&["gunicorn", "app:app"]), "gunicorn");
        assert_eq!(name(&["./target/release/api", "serve"]), "api");
        assert_eq!(name(&["my app!"]), "my-app-");
        assert_eq!(
            name(&["sh", "-c", "PORT=1 exec gunicorn -w 1 app:app"]),
            "gunicorn"
        );
        assert_eq!(name(&["/bin/bash", "-ec", "node api.js"]), "api");
        assert_eq!(name(&["sh", "start.sh"]), "start");
        assert!(valid_name("api-server_2.v1"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }
}
