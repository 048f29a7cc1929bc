//! Lua scripting as Redis 7.0 has it: `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `SCRIPT`,
//! and `FUNCTION FLUSH`, on Lua 5.1 (mlua, vendored) like Redis.
//!
//! - One Lua state for the store, made anew by `SCRIPT FLUSH`. `prelude.lua` sets it up as Redis
//!   does: no `os`, `io`, `loadfile`, `dofile`, `require`, `print` or `debug`; the `redis`
//!   table, `cjson`, `cmsgpack`, `bit` (`libs`), `struct` (`structs`); scripts run with a global table that refuses
//!   new globals ("Attempt to modify a readonly table") and reads of missing ones, and the
//!   `redis`, `cjson`, `cmsgpack`, `bit` and `struct` tables are read-only (Lua's own `string`, `table`,
//!   `math` are not: Redis patches Lua for that, mlua's Lua is stock).
//! - A script is compiled once, named by the SHA-1 of its body, and cached until `SCRIPT FLUSH`.
//! - `redis.call` runs a command through the same checks and handlers as a client's command
//!   (`super::run`), with the caller's client (its database is restored after the script, as a
//!   `SELECT` in a script does not change the caller's in Redis 7), into a buffer of its own;
//!   the RESP it wrote is read back into Lua values (`convert`). WATCH sees the writes, and the
//!   state file gets the write commands the script ran (between `MULTI` and `EXEC` when there
//!   are several), never the `EVAL`: replaying never runs Lua.
//! - Scripts run on the store's thread, atomically. A script that runs past `lua-time-limit`
//!   (5 s) does not wedge the store: an instruction hook (`busy`) then answers the other clients
//!   itself, straight on their sockets, with `-BUSY`, and `SCRIPT KILL` stops the script.
//!   See `busy.rs` for why it is done that way.

mod busy;
mod convert;
mod engine;
mod functions;
mod json;
mod libs;
mod shebang;
mod structs;

pub use functions::{fcall, fcall_ro, function};

use engine::{engine, Engine};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use mlua::{Function, Lua, Table, Value, VmState};
use sha1::{Digest, Sha1};

use super::{int_arg, refusal, subcommand, Ctx, Fail, Outcome, WRITE};
use crate::state::reply::Out;

pub use busy::{Adopted, Busy};

/// Redis's `lua-time-limit` default: past it, other clients get BUSY.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);
/// How often (in Lua instructions) the hook looks at the clock.
const HOOK_EVERY: u32 = 10_000;

const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// The Lua state and the scripts it has compiled.
pub struct Scripting {
    lua: Option<Engine>,
    /// Scripts by SHA-1 (lowercase hex): body, compiled function, and `no-writes` (its
    /// shebang's flag).
    scripts: HashMap<Rc<str>, (Bytes, Function, bool)>,
    /// Functions (`FUNCTION LOAD`) by name, and their libraries.
    functions: functions::Functions,
    /// Shared with the instruction hook and the busy loop.
    pub busy: Rc<Busy>,
}

impl std::fmt::Debug for Scripting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripting")
            .field("scripts", &self.scripts.len())
            .finish()
    }
}

impl Default for Scripting {
    fn default() -> Scripting {
        Scripting {
            lua: None,
            scripts: HashMap::new(),
            functions: functions::Functions::default(),
            busy: Rc::new(Busy::default()),
        }
    }
}

impl Scripting {
    /// A script running when `stopping` is set is abandoned (see [`Busy::stopping`]). Called
    /// on a fresh store, before any script has shared the busy state.
    pub fn abandon_when(&mut self, stopping: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        Rc::get_mut(&mut self.busy)
            .expect("no script has run yet")
            .stopping = stopping;
    }
}

pub fn sha1_hex(body: &[u8]) -> String {
    let digest = Sha1::digest(body);
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Scripting {
    /// `INFO memory`'s `number_of_cached_scripts`.
    pub fn cached_scripts(&self) -> usize {
        self.scripts.len()
    }

    fn engine(&mut self) -> Result<&Engine, Fail> {
        if self.lua.is_none() {
            let engine =
                engine(&self.busy).map_err(|error| Fail::from(format!("ERR Lua: {error}")))?;
            self.lua = Some(engine);
        }
        Ok(self.lua.as_ref().expect("just made"))
    }

    /// Compiles `body` (once) and returns its SHA-1.
    fn load(&mut self, body: &Bytes) -> Result<String, Fail> {
        let sha = sha1_hex(body);
        if self.scripts.contains_key(sha.as_str()) {
            return Ok(sha);
        }
        let (start, no_writes) = shebang::eval_flags(body)?;
        let engine = self.engine()?;
        let compiled = engine
            .lua
            .load(&body[start..])
            .set_name("@user_script")
            .into_function()
            .and_then(|function| engine.prepare.call::<Function>(function))
            .map_err(|error| {
                Fail::from(format!(
                    "ERR Error compiling script (new function): {}",
                    lua_message(&error)
                ))
            })?;
        self.scripts
            .insert(sha.as_str().into(), (body.clone(), compiled, no_writes));
        Ok(sha)
    }

    /// `SCRIPT FLUSH`: the compiled scripts go (functions stay, as in Redis).
    fn flush(&mut self) {
        self.scripts.clear();
    }
}

/// The text of a Lua error without mlua's decoration.
fn lua_message(error: &mlua::Error) -> String {
    match error {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(message) => message.clone(),
        mlua::Error::CallbackError { cause, .. } => lua_message(cause),
        other => other.to_string(),
    }
}

pub fn eval(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let sha = ctx.store.scripting.load(&args[1])?;
    run_cached(ctx, &sha, args, false)
}

pub fn eval_ro(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let sha = ctx.store.scripting.load(&args[1])?;
    run_cached(ctx, &sha, args, true)
}

pub fn evalsha(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let sha = cached_sha(ctx, &args[1])?;
    run_cached(ctx, &sha, args, false)
}

pub fn evalsha_ro(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let sha = cached_sha(ctx, &args[1])?;
    run_cached(ctx, &sha, args, true)
}

/// The cached script's name for `sha` in any case, or `NOSCRIPT`.
fn cached_sha(ctx: &Ctx, sha: &[u8]) -> Result<Rc<str>, Fail> {
    let scripts = &ctx.store.scripting.scripts;
    let found = match std::str::from_utf8(sha) {
        Ok(text) if !text.bytes().any(|b| b.is_ascii_uppercase()) => scripts.get_key_value(text),
        _ => scripts.get_key_value(String::from_utf8_lossy(sha).to_ascii_lowercase().as_str()),
    };
    found
        .map(|(name, _)| name.clone())
        .ok_or_else(|| NOSCRIPT.into())
}

fn run_cached(ctx: &mut Ctx, sha: &str, args: &[Bytes], read_only: bool) -> Outcome {
    let (_, function, no_writes) = &ctx.store.scripting.scripts[sha];
    let (function, no_writes) = (function.clone(), *no_writes);
    let script = Script {
        function,
        name: sha,
        source: "@user_script",
        read_only: read_only || no_writes,
        as_function: false,
    };
    run_script(ctx, script, args)
}

/// What to run: a cached script (`KEYS`/`ARGV` globals) or a function (`KEYS`, `ARGV` as
/// arguments), named in errors by its SHA-1 or its name.
struct Script<'a> {
    function: Function,
    name: &'a str,
    source: &'a str,
    read_only: bool,
    as_function: bool,
}

/// What a running script's `redis.call` works with.
pub struct Caller<'a, 'b> {
    ctx: &'a mut Ctx<'b>,
    read_only: bool,
    wrote: Rc<Cell<bool>>,
}

fn run_script(ctx: &mut Ctx, script: Script, args: &[Bytes]) -> Outcome {
    let Script {
        function,
        name: sha,
        source,
        read_only,
        as_function,
    } = script;
    let numkeys = int_arg(&args[2])?;
    if numkeys < 0 {
        return Err("ERR Number of keys can't be negative".into());
    }
    if numkeys as usize > args.len() - 3 {
        return Err("ERR Number of keys can't be greater than number of args".into());
    }
    let (keys, argv) = args[3..].split_at(numkeys as usize);
    let scripting = &mut ctx.store.scripting;
    let engine = scripting
        .lua
        .take()
        .expect("a compiled script has its engine");
    let busy = scripting.busy.clone();
    engine.resp3.set(false);
    busy.start(ctx.client.id, as_function);
    let saved_db = ctx.client.db;
    let log_start = ctx.store.log.as_ref().map_or(0, Vec::len);
    if ctx.store.log.is_some() {
        ctx.store.log_command(&[&b"MULTI"[..]]);
    }
    let body_start = ctx.store.log.as_ref().map_or(0, Vec::len);
    let body_db = ctx.store.current_db();
    let wrote = busy.wrote.clone();
    let mut reply = Out {
        resp3: ctx.out.resp3,
        ..Out::default()
    };
    let outcome = {
        let caller = RefCell::new(Caller {
            ctx: &mut *ctx,
            read_only,
            wrote,
        });
        let running = engine.run_for(&caller);
        let result = (|| {
            let keys = engine
                .lua
                .create_sequence_from(keys.iter().map(|k| BytesLua(k)))?;
            let argv = engine
                .lua
                .create_sequence_from(argv.iter().map(|a| BytesLua(a)))?;
            engine
                .run
                .call::<(bool, Value)>((function, keys, argv, as_function))
        })();
        drop(running);
        match result {
            Ok((true, value)) => {
                convert::lua_to_reply(&value, &mut reply, engine.resp3.get());
                Ok(())
            }
            Ok((false, value)) => Err(error_text(&value, sha, source, &busy)),
            Err(error) => Err(Fail::from(format!(
                "ERR Error running script (call to f_{sha}): {}",
                lua_message(&error)
            ))),
        }
    };
    let abandoned = busy.abandoned.get();
    busy.finish(ctx.store);
    ctx.client.db = saved_db;
    ctx.store.select(body_db);
    if let Some(log) = &mut ctx.store.log {
        // A script abandoned for the stop leaves the file as it was before it (its writes
        // are in memory only, which goes with the process).
        if log.len() == body_start || abandoned {
            log.truncate(log_start);
        } else {
            crate::state::store::encode_command(log, &[&b"EXEC"[..]]);
        }
    }
    let scripting = &mut ctx.store.scripting;
    if scripting.lua.is_none() {
        scripting.lua = Some(engine);
    }
    ctx.store.select(ctx.client.db);
    outcome?;
    // A script that returns an error (`redis.error_reply`) failed as a command does: its
    // code counts in errorstats.
    if let Some(error) = reply.buf.strip_prefix(b"-") {
        let line = error
            .split(|byte| *byte == b'\r')
            .next()
            .unwrap_or_default();
        return Err(Fail::from(String::from_utf8_lossy(line).into_owned()));
    }
    ctx.out.buf.extend_from_slice(&reply.buf);
    Ok(())
}

/// A byte string for Lua.
struct BytesLua<'a>(&'a [u8]);

impl mlua::IntoLua for BytesLua<'_> {
    fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        lua.create_string(self.0).map(Value::String)
    }
}

/// The error reply for a script that failed with `value` (Redis 7.0's format).
fn error_text(value: &Value, sha: &str, source: &str, busy: &Busy) -> Fail {
    if busy.killed.get() {
        return Fail::from(format!(
            "ERR Script killed by user with SCRIPT KILL... script: {sha}, on {source}:1."
        ));
    }
    let Value::Table(table) = value else {
        return Fail::from(format!("ERR Error running script {sha}, execution failure"));
    };
    let text = |key: &str| match table.raw_get::<Value>(key) {
        Ok(Value::String(s)) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
        Ok(Value::Integer(n)) => Some(n.to_string()),
        Ok(Value::Number(n)) => Some((n as i64).to_string()),
        _ => None,
    };
    let mut message = text("err").unwrap_or_default();
    if let (Some(source), Some(line)) = (text("source"), text("line")) {
        message.push_str(&format!(" script: {sha}, on {source}:{line}."));
    }
    Fail::from(message)
}

/// Commands a script may not run (Redis's `noscript` flag).
fn refused_in_scripts(name: &str) -> bool {
    matches!(
        name,
        "multi"
            | "exec"
            | "discard"
            | "watch"
            | "unwatch"
            | "subscribe"
            | "unsubscribe"
            | "psubscribe"
            | "punsubscribe"
            | "eval"
            | "evalsha"
            | "eval_ro"
            | "evalsha_ro"
            | "script"
            | "function"
            | "fcall"
            | "fcall_ro"
            | "client"
            | "hello"
            | "auth"
            | "reset"
            | "quit"
            | "monitor"
            | "blpop"
            | "brpop"
            | "brpoplpush"
            | "blmove"
            | "blmpop"
            | "bzpopmin"
            | "bzpopmax"
            | "bzmpop"
            | "wait"
    )
}

/// `redis.call` / `redis.pcall`: `raise` is the first argument; answers `(ok, value)`.
pub fn call_from_script(
    lua: &Lua,
    caller: &mut Caller,
    resp3: &Cell<bool>,
    count: usize,
    args: Table,
) -> mlua::Result<(bool, Value)> {
    let fail = |lua: &Lua, text: &str| -> mlua::Result<(bool, Value)> {
        let table = lua.create_table()?;
        table.raw_set("err", text)?;
        Ok((false, Value::Table(table)))
    };
    let mut command: Vec<Bytes> = Vec::with_capacity(count);
    for index in 1..=count {
        match args.raw_get::<Value>(index)? {
            Value::String(s) => command.push(Bytes::copy_from_slice(&s.as_bytes())),
            Value::Integer(n) => command.push(Bytes::from(n.to_string())),
            Value::Number(n) => command.push(Bytes::from(libs::lua_number_text(n))),
            _ => {
                return fail(
                    lua,
                    "ERR Lua redis lib command arguments must be strings or integers",
                )
            }
        }
    }
    if command.is_empty() {
        return fail(
            lua,
            "ERR Please specify at least one argument for this redis lib call",
        );
    }
    let ctx = &mut *caller.ctx;
    let Some(spec) = ctx.store.table.lookup(&command[0]) else {
        return fail(lua, "ERR Unknown Redis command called from script");
    };
    let argc = command.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || argc < -spec.arity {
        return fail(
            lua,
            "ERR Wrong number of args calling Redis command from script",
        );
    }
    let cluster_reset = spec.name == "cluster"
        && command
            .get(1)
            .is_some_and(|sub| sub.eq_ignore_ascii_case(b"reset"));
    if refused_in_scripts(spec.name) || cluster_reset {
        return fail(lua, "ERR This Redis command is not allowed from script");
    }
    let options = command[1..]
        .iter()
        .take_while(|arg| !arg.eq_ignore_ascii_case(b"streams"));
    if spec.name == "xread"
        && options
            .clone()
            .any(|arg| arg.eq_ignore_ascii_case(b"block"))
    {
        return fail(
            lua,
            &format!(
                "ERR {} command is not allowed with BLOCK option from scripts",
                String::from_utf8_lossy(&command[0])
            ),
        );
    }
    if let Some(reason) = refusal(ctx.store, ctx.client, spec, &command) {
        return fail(lua, &reason);
    }
    if spec.flags & WRITE != 0 {
        if caller.read_only {
            return fail(
                lua,
                "ERR Write commands are not allowed from read-only scripts.",
            );
        }
        caller.wrote.set(true);
    }
    let mut out = Out {
        resp3: resp3.get(),
        ..Out::default()
    };
    super::run(ctx.store, ctx.client, &mut out, spec, &command);
    let mut pos = 0;
    let value = convert::reply_to_lua(lua, &out.buf, &mut pos)?;
    let failed = out.buf.first() == Some(&b'-');
    Ok((!failed, value))
}

/// `SCRIPT LOAD|EXISTS|FLUSH|KILL|HELP`.
pub fn script(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [
        ("load", 3),
        ("exists", -3),
        ("flush", -2),
        ("kill", 2),
        ("help", 2),
    ];
    match subcommand(args, "script", &known)? {
        "load" => {
            let sha = ctx.store.scripting.load(&args[2])?;
            ctx.out.bulk(sha.as_bytes());
        }
        "exists" => {
            let scripts = &ctx.store.scripting.scripts;
            ctx.out.array_header(args.len() - 2);
            for sha in &args[2..] {
                let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                ctx.out.int(i64::from(scripts.contains_key(sha.as_str())));
            }
        }
        "flush" => {
            if args.len() > 3
                || args.get(2).is_some_and(|mode| {
                    !mode.eq_ignore_ascii_case(b"sync") && !mode.eq_ignore_ascii_case(b"async")
                })
            {
                return Err("ERR SCRIPT FLUSH only support SYNC|ASYNC option".into());
            }
            ctx.store.scripting.flush();
            ctx.out.ok();
        }
        "kill" => return Err("NOTBUSY No scripts in execution right now.".into()),
        _ => {
            let lines = [
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache. Very dangerous on replicas.",
                "    When called without the optional mode argument, the behavior is determined by the",
                "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
                "    * ASYNC: Asynchronously flush the scripts cache.",
                "    * SYNC: Synchronously flush the scripts cache.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
                "HELP",
                "    Prints this help.",
            ];
            ctx.out.array_header(lines.len());
            for line in lines {
                ctx.out.simple(line);
            }
        }
    }
    Ok(())
}

/// The hook's verdict: go on, or stop the script (killed).
pub fn hook_result(killed: bool) -> mlua::Result<VmState> {
    if killed {
        Err(mlua::Error::RuntimeError(
            "ERR Script killed by user with SCRIPT KILL...".into(),
        ))
    } else {
        Ok(VmState::Continue)
    }
}
