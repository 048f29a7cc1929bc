-- Run once per Lua state (chunk "=herdsman"): the sandbox, the redis table, the libraries'
-- wrappers and the error handler, as Redis 7.0 sets them up. `raw` holds the Rust functions.
local raw = ...
local G = _G
local dbg = debug
local error, type, tostring, setmetatable, select, unpack, xpcall, setfenv, table =
  error, type, tostring, setmetatable, select, unpack, xpcall, setfenv, table

local env
local function readonly_error() error("Attempt to modify a readonly table", 2) end
-- The readonly tables, and what getmetatable shows of each: nothing for a library, a readonly
-- view for the globals (as Redis, whose readonly tables are a flag in its patched Lua).
local shown_metatable = setmetatable({}, {__mode = 'k'})
local function readonly(t)
  local view = setmetatable({}, {__index = t, __newindex = readonly_error, __metatable = false})
  shown_metatable[view] = false
  return view
end

-- Raw functions answer true, {results, n=...} or false, message.
-- raw.wrap makes a Lua function a C function (a trampoline), so that a script's
-- `return redis.call(...)` keeps the script's frame (and its line) as it does in Redis.
local wrap = raw.wrap
local function raising(f)
  return wrap(function(...)
    local ok, r = f(...)
    if not ok then error(r, 3) end
    return unpack(r, 1, r.n)
  end)
end

-- Redis turns a raised error table into a message with a code: "-CODE msg" or "ERR msg".
local function error_table(msg)
  if msg:sub(1, 1) == '-' then
    msg = msg:sub(2)
    if not msg:find(' ', 1, true) then msg = 'ERR ' .. msg end
  else
    msg = 'ERR ' .. msg
  end
  return {err = (msg:gsub('[\r\n]+$', ''))}
end

local redis = {}
-- The arguments go to Rust as one table: a C function cannot take the 8000 that a script may
-- pass (`redis.call('lpush', k, unpack(t))`), as Redis's own C `redis.call` can.
redis.call = wrap(function(...)
  local ok, r = raw.call(select('#', ...), {...})
  if not ok then error(r) end
  return r
end)
redis.pcall = wrap(function(...)
  local ok, r = raw.call(select('#', ...), {...})
  return r
end)
redis.error_reply = wrap(function(msg)
  if type(msg) ~= 'string' then error({err = 'ERR wrong number or type of arguments'}) end
  if msg:sub(1, 1) ~= '-' then msg = '-' .. msg end
  return error_table(msg)
end)
redis.status_reply = wrap(function(msg)
  if type(msg) ~= 'string' then error({err = 'ERR wrong number or type of arguments'}) end
  return {ok = msg}
end)
redis.sha1hex = wrap(function(...)
  if select('#', ...) ~= 1 then error({err = 'ERR wrong number of arguments'}) end
  return raw.sha1hex(tostring((...)))
end)
redis.log = wrap(function(level, ...)
  if select('#', ...) < 1 then error({err = 'ERR redis.log() requires two arguments or more.'}) end
  if type(level) ~= 'number' then error({err = 'ERR First argument must be a number (log level).'}) end
  if level < 0 or level > 3 then error({err = 'ERR Invalid debug level.'}) end
end)
redis.setresp = wrap(function(v)
  if v ~= 2 and v ~= 3 then error({err = 'ERR RESP version must be 2 or 3.'}) end
  raw.setresp(v)
end)
-- FUNCTION LOAD: raw.register is set while a library loads.
redis.register_function = wrap(function(name, callback)
  local flags
  if type(name) == 'table' then
    name, callback, flags = name.function_name, name.callback, name.flags
  end
  if not raw.register then
    error({err = 'ERR redis.register_function can only be called on FUNCTION LOAD command'})
  end
  if type(name) ~= 'string' then error({err = 'ERR function name argument given to redis.register_function must be a string'}) end
  if type(callback) ~= 'function' then error({err = 'ERR callback argument given to redis.register_function must be a function'}) end
  local no_writes = false
  if type(flags) == 'table' then
    for _, flag in ipairs(flags) do
      if flag == 'no-writes' then no_writes = true end
    end
  end
  local problem = raw.register(name, callback, no_writes)
  if problem then error({err = problem}) end
end)
redis.set_repl = function() end
redis.replicate_commands = function() return true end
redis.breakpoint = function() return false end
redis.debug = function() end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
redis.REDIS_VERSION = '7.0.15'
redis.REDIS_VERSION_NUM = 0x07000f

local bit = {}
for _, name in ipairs({'tobit', 'tohex', 'bnot', 'band', 'bor', 'bxor', 'lshift', 'rshift',
                       'arshift', 'rol', 'ror', 'bswap'}) do
  local op = raising(function(...) return raw.bit(name, ...) end)
  bit[name] = op
end

local cjson = {
  encode = raising(raw.cjson_encode),
  decode = raising(raw.cjson_decode),
  encode_max_depth = raising(raw.cjson_encode_max_depth),
  decode_max_depth = raising(raw.cjson_decode_max_depth),
  encode_invalid_numbers = raising(raw.cjson_encode_invalid_numbers),
  encode_keep_buffer = raising(raw.cjson_encode_keep_buffer),
  null = raw.null,
}
local struct = {
  pack = raising(raw.struct_pack),
  unpack = raising(raw.struct_unpack),
  size = raising(raw.struct_size),
}
local cmsgpack = {
  pack = raising(raw.msgpack_pack),
  unpack = raising(raw.msgpack_unpack),
  unpack_one = raising(raw.msgpack_unpack_one),
  unpack_limit = raising(raw.msgpack_unpack_limit),
}

-- Redis's pcall hands the script the message of an error table, not the table.
local lua_pcall = pcall
-- A script stopped by SCRIPT KILL stays stopped: pcall does not catch that error.
G.pcall = function(...)
  local r = {lua_pcall(...)}
  if not r[1] and raw.killed() then error(r[2], 0) end
  if not r[1] and type(r[2]) == 'table' and type(r[2].err) == 'string' then r[2] = r[2].err end
  return unpack(r, 1, table.maxn(r))
end

G.redis = readonly(redis)
G.string = readonly(string)
G.table = readonly(table)
G.math = readonly(math)
G.bit = readonly(bit)
G.cjson = readonly(cjson)
G.cmsgpack = readonly(cmsgpack)
G.struct = readonly(struct)
-- Redis's readonly tables refuse setmetatable and rawset too (its message has no position).
local lua_setmetatable, lua_rawset, lua_getmetatable = setmetatable, rawset, getmetatable
G.setmetatable = function(t, mt)
  if shown_metatable[t] ~= nil then error("Attempt to modify a readonly table", 0) end
  return lua_setmetatable(t, mt)
end
G.rawset = function(t, k, v)
  if shown_metatable[t] ~= nil then error("Attempt to modify a readonly table", 0) end
  return lua_rawset(t, k, v)
end
G.getmetatable = function(t)
  local shown = shown_metatable[t]
  if shown ~= nil then return shown or nil end
  return lua_getmetatable(t)
end
-- No binary chunks (string.dump's output): Redis 7.0 loads source only.
local lua_loadstring, lua_load, concat = loadstring, load, table.concat
local function source_only(code, name)
  if type(code) == 'string' and code:byte(1) == 27 then
    return nil, 'binary code loading is disabled'
  end
  return lua_loadstring(code, name)
end
G.loadstring = source_only
G.load = function(reader, name)
  if type(reader) ~= 'function' then return lua_load(reader, name) end
  local pieces = {}
  while true do
    local piece = reader()
    if piece == nil or piece == '' then break end
    pieces[#pieces + 1] = piece
  end
  return source_only(concat(pieces), name)
end
G.loadfile, G.dofile, G.require, G.module, G.print = nil, nil, nil, nil, nil
G.os, G.io, G.package, G.debug, G.newproxy, G.gcinfo = nil, nil, nil, nil, nil, nil

-- The scripts' globals: reads of missing names and every write fail, with Redis's texts.
local env_metatable = {
  __index = function(_, name)
    local v = G[name]
    if v == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end
    return v
  end,
  __newindex = readonly_error,
}
env = setmetatable({}, env_metatable)
env_metatable.__metatable = false
shown_metatable[env] = readonly(env_metatable)
G._G = env

-- Redis's error handler: every error becomes {err=..., source=..., line=...}, placed at the
-- first frame of the script itself (not a C function, not this prelude).
local function handler(err)
  local level, info = 2, nil
  while true do
    info = dbg.getinfo(level, 'nSl')
    if not info then break end
    if info.what ~= 'C' and info.source ~= '=herdsman' then break end
    level = level + 1
  end
  if type(err) ~= 'table' then
    err = {err = 'ERR ' .. tostring(err)}
  end
  if info then
    err.source = info.source
    err.line = info.currentline
  end
  return err
end

-- Rust calls these: prepare a compiled script, and run one with KEYS and ARGV.
local function prepare(f) return setfenv(f, env) end
local function run(f, keys, argv, as_function)
  if as_function then
    return xpcall(function() return f(keys, argv) end, handler)
  end
  G.KEYS, G.ARGV = keys, argv
  return xpcall(f, handler)
end
return prepare, run
