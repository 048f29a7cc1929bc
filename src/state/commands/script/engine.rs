//! The store's one Lua state: Lua 5.1 with the standard libraries scripts may use, the
//! prelude (`prelude.lua`: the sandbox, the `redis` table, the read-only globals), the
//! libraries Redis ships (`cjson`, `cmsgpack`, `bit`, `struct`) and the instruction hook that
//! keeps a busy script from wedging the store (`busy`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use mlua::{Function, HookTriggers, Lua, StdLib, Table, Value};

use super::{call_from_script, libs, sha1_hex, structs, Busy, Caller, HOOK_EVERY};

pub struct Engine {
    pub lua: Lua,
    pub raw: Table,
    pub prepare: Function,
    pub run: Function,
    pub resp3: Rc<Cell<bool>>,
    /// The caller of the script that runs now, for `redis.call` (null between scripts).
    running: Rc<Cell<*const ()>>,
}

impl Engine {
    /// Makes `caller` the one `redis.call` runs commands for until the guard goes. The
    /// `redis.call` callback is made once with the engine rather than per script (an mlua
    /// scope per script cost a callback made and torn down on every `EVALSHA`); this pointer
    /// is what the scope would have checked.
    pub fn run_for<'a>(&'a self, caller: &'a RefCell<Caller<'_, '_>>) -> RunningScript<'a> {
        self.running
            .set(caller as *const RefCell<Caller> as *const ());
        RunningScript(&self.running)
    }
}

/// While it lives, `redis.call` runs commands for one caller; it clears the pointer on drop,
/// before the caller it points to can go (it borrows it).
pub struct RunningScript<'a>(&'a Cell<*const ()>);

impl Drop for RunningScript<'_> {
    fn drop(&mut self) {
        self.0.set(std::ptr::null());
    }
}

#[allow(unsafe_code)]
pub fn engine(busy: &Rc<Busy>) -> mlua::Result<Engine> {
    // SAFETY: the debug library is needed for the error handler's positions; the prelude takes
    // it away from scripts.
    let lua = unsafe {
        Lua::unsafe_new_with(
            StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::DEBUG,
            mlua::LuaOptions::new(),
        )
    };
    let raw = lua.create_table()?;
    libs::register(&lua, &raw)?;
    structs::register(&lua, &raw)?;
    raw.raw_set(
        "null",
        Value::LightUserData(mlua::LightUserData(std::ptr::null_mut())),
    )?;
    raw.raw_set(
        "sha1hex",
        lua.create_function(|_, text: mlua::LuaString| Ok(sha1_hex(&text.as_bytes())))?,
    )?;
    let resp3 = Rc::new(Cell::new(false));
    let flag = resp3.clone();
    raw.raw_set(
        "setresp",
        lua.create_function(move |_, version: i64| {
            flag.set(version == 3);
            Ok(())
        })?,
    )?;
    raw.raw_set(
        "wrap",
        lua.create_function(|lua, function: Function| trampoline(lua, function))?,
    )?;
    let running: Rc<Cell<*const ()>> = Rc::new(Cell::new(std::ptr::null()));
    let current = running.clone();
    let call_resp3 = resp3.clone();
    raw.raw_set(
        "call",
        lua.create_function(move |lua, (count, args): (usize, Table)| {
            let caller = current.get() as *const RefCell<Caller>;
            if caller.is_null() {
                return Err(mlua::Error::RuntimeError(
                    "ERR redis.call outside a script".into(),
                ));
            }
            // SAFETY: the pointer is set by `Engine::run_for` to a caller that the guard it
            // returns borrows, and cleared when the guard goes, so a non-null pointer points
            // to a live caller. The RefCell still refuses a second, nested borrow.
            let caller = unsafe { &*caller };
            call_from_script(lua, &mut caller.borrow_mut(), &call_resp3, count, args)
        })?,
    )?;
    let (prepare, run): (Function, Function) = lua
        .load(include_str!("prelude.lua"))
        .set_name("=herdsman")
        .call(raw.clone())?;
    let killed_busy = busy.clone();
    raw.raw_set(
        "killed",
        lua.create_function(move |_, ()| Ok(killed_busy.killed.get()))?,
    )?;
    let hook_busy = busy.clone();
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_, _| hook_busy.tick(),
    )?;
    Ok(Engine {
        lua,
        raw,
        prepare,
        run,
        resp3,
        running,
    })
}

/// `function` behind a C function that calls it (Lua 5.1 keeps the caller's frame for a tail
/// call to a C function, not to a Lua one: error positions then name the script's line).
#[allow(unsafe_code)]
fn trampoline(lua: &Lua, function: Function) -> mlua::Result<Function> {
    unsafe extern "C-unwind" fn call_upvalue(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
        use mlua::ffi;
        // SAFETY: Lua calls this with its arguments on the stack and the wrapped function as
        // upvalue 1; lua_call moves them to the function and leaves its results, which are
        // the whole stack. An error unwinds through this frame, which holds nothing to drop.
        unsafe {
            let args = ffi::lua_gettop(state);
            ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
            ffi::lua_insert(state, 1);
            ffi::lua_call(state, args, ffi::LUA_MULTRET);
            ffi::lua_gettop(state)
        }
    }
    // SAFETY: `function` is on the stack as the only argument; pushcclosure takes it as the
    // upvalue and leaves the new closure, the result.
    unsafe {
        lua.exec_raw(function, |state| {
            mlua::ffi::lua_pushcclosure(state, call_upvalue, 1);
        })
    }
}
