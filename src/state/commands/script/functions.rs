//! Redis 7.0 functions, enough for what scripts and Redis's own tests use: `FUNCTION LOAD
//! [REPLACE]` (a `#!lua name=…` library that calls `redis.register_function`), `FCALL`,
//! `FCALL_RO`, `FUNCTION DELETE`, `FUNCTION FLUSH`, `FUNCTION LIST`. Functions live in the
//! same Lua state as scripts (with the same sandbox); `SCRIPT FLUSH` leaves them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use mlua::{Function, Value};

use super::{lua_message, run_script, Script};
use crate::state::commands::{subcommand, Ctx, Outcome};

#[derive(Default)]
pub struct Functions {
    /// Function name → (library, function, `no-writes`).
    by_name: HashMap<String, (String, Function, bool)>,
    /// Library name → its code and its functions' names.
    libraries: BTreeMap<String, (Bytes, Vec<String>)>,
}

fn load(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (replace, code) = match args.len() {
        3 => (false, &args[2]),
        4 if args[2].eq_ignore_ascii_case(b"replace") => (true, &args[3]),
        4 => {
            return Err(format!(
                "ERR Unknown option given: {}",
                String::from_utf8_lossy(&args[2])
            )
            .into())
        }
        _ => return Err(super::super::arity_error("function|load")),
    };
    let name = super::shebang::library_name(code)?;
    let scripting = &mut ctx.store.scripting;
    if !replace && scripting.functions.libraries.contains_key(&name) {
        return Err(format!("ERR Library '{name}' already exists").into());
    }
    // The first line (the metadata) is Lua's business no more; keep the line numbers.
    let start = code
        .iter()
        .position(|byte| *byte == b'\n')
        .unwrap_or(code.len());
    let body = &code[start..];
    let engine = scripting.engine()?;
    let registered: RefCell<Vec<(String, Function, bool)>> = RefCell::new(Vec::new());
    let outcome = engine.lua.scope(|scope| {
        let register =
            scope.create_function(|_, (name, callback, no_writes): (String, Function, bool)| {
                let mut registered = registered.borrow_mut();
                if registered.iter().any(|(known, _, _)| *known == name) {
                    return Ok(Some(format!("ERR Function {name} already exists")));
                }
                registered.push((name, callback, no_writes));
                Ok(None)
            })?;
        engine.raw.raw_set("register", register)?;
        let compiled = engine
            .lua
            .load(body)
            .set_name("@user_function")
            .into_function()
            .and_then(|function| engine.prepare.call::<Function>(function));
        let result = match compiled {
            Ok(function) => {
                let empty = engine.lua.create_table()?;
                let (ok, value): (bool, Value) =
                    engine.run.call((function, empty.clone(), empty, false))?;
                Ok((ok, value))
            }
            Err(error) => Err(error),
        };
        engine.raw.raw_set("register", Value::Nil)?;
        Ok(result)
    });
    match outcome {
        Ok(Ok((true, _))) => {}
        Ok(Ok((false, Value::Table(error)))) => {
            let text: String = error.raw_get("err").unwrap_or_default();
            return Err(format!("ERR Error registering functions: {text}").into());
        }
        Ok(Ok((false, _))) => return Err("ERR Error registering functions".into()),
        Ok(Err(error)) | Err(error) => {
            return Err(format!("ERR Error compiling function: {}", lua_message(&error)).into())
        }
    }
    let registered = registered.into_inner();
    if registered.is_empty() {
        return Err("ERR No functions registered".into());
    }
    let functions = &mut scripting.functions;
    for (function, _, _) in &registered {
        if let Some((library, _, _)) = functions.by_name.get(function) {
            if *library != name {
                return Err(format!("ERR Function {function} already exists").into());
            }
        }
    }
    functions.delete(&name);
    let names = registered.iter().map(|(n, _, _)| n.clone()).collect();
    for (function, callback, no_writes) in registered {
        functions
            .by_name
            .insert(function, (name.clone(), callback, no_writes));
    }
    functions
        .libraries
        .insert(name.clone(), (code.clone(), names));
    ctx.out.bulk(name.as_bytes());
    Ok(())
}

impl Functions {
    fn delete(&mut self, library: &str) -> bool {
        let Some((_, names)) = self.libraries.remove(library) else {
            return false;
        };
        for name in names {
            self.by_name.remove(&name);
        }
        true
    }
}

/// `FUNCTION LOAD|DELETE|FLUSH|LIST`.
pub fn function(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [("load", -3), ("delete", 3), ("flush", -2), ("list", -2)];
    match subcommand(args, "function", &known)? {
        "load" => return load(ctx, args),
        "delete" => {
            let library = String::from_utf8_lossy(&args[2]).into_owned();
            if !ctx.store.scripting.functions.delete(&library) {
                return Err("ERR Library not found".into());
            }
            ctx.out.ok();
        }
        "kill" => return Err("NOTBUSY No scripts in execution right now.".into()),
        "flush" => {
            ctx.store.scripting.functions = Functions::default();
            ctx.out.ok();
        }
        _ => {
            let functions = &ctx.store.scripting.functions;
            ctx.out.array_header(functions.libraries.len());
            for (library, (_, names)) in &functions.libraries {
                ctx.out.map_header(3);
                ctx.out.bulk(b"library_name");
                ctx.out.bulk(library.as_bytes());
                ctx.out.bulk(b"engine");
                ctx.out.bulk(b"LUA");
                ctx.out.bulk(b"functions");
                ctx.out.array_header(names.len());
                for name in names {
                    let no_writes = functions.by_name.get(name).is_some_and(|f| f.2);
                    ctx.out.map_header(3);
                    ctx.out.bulk(b"name");
                    ctx.out.bulk(name.as_bytes());
                    ctx.out.bulk(b"description");
                    ctx.out.null();
                    ctx.out.bulk(b"flags");
                    ctx.out.set_of(no_writes.then_some(&b"no-writes"[..]));
                }
            }
        }
    }
    Ok(())
}

fn call(ctx: &mut Ctx, args: &[Bytes], read_only: bool) -> Outcome {
    let name = String::from_utf8_lossy(&args[1]).into_owned();
    let Some((_, function, no_writes)) = ctx.store.scripting.functions.by_name.get(&name) else {
        return Err("ERR Function not found".into());
    };
    if read_only && !no_writes {
        return Err("ERR Can not execute a script with write flag using *_ro command.".into());
    }
    let script = Script {
        function: function.clone(),
        name: &name,
        source: "@user_function",
        read_only: read_only || *no_writes,
        as_function: true,
    };
    run_script(ctx, script, args)
}

pub fn fcall(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    call(ctx, args, false)
}

pub fn fcall_ro(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    call(ctx, args, true)
}
