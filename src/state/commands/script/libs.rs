//! The libraries Redis gives scripts besides Lua's own: `cmsgpack` (over the rmp crate's
//! encoders and markers) and `bit` (LuaBitOp's semantics on 32-bit integers); `cjson` is in
//! `json.rs`. Each function here is raw: it returns `true, {results…}` or
//! `false, message`, and the Lua wrappers in `mod.rs` raise the message as a Lua error, so
//! errors reach the script as strings, the way Redis's C libraries raise them.

use mlua::{Lua, MultiValue, Table, Value, Variadic};

type Raw = mlua::Result<(bool, Value)>;

pub fn results(lua: &Lua, values: Vec<Value>) -> Raw {
    let table = lua.create_table()?;
    let count = values.len();
    for (index, value) in values.into_iter().enumerate() {
        table.raw_set(index + 1, value)?;
    }
    table.raw_set("n", count)?;
    Ok((true, Value::Table(table)))
}

pub fn failure(lua: &Lua, message: &str) -> Raw {
    Ok((false, Value::String(lua.create_string(message)?)))
}

pub(super) fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(n) => Some(*n as f64),
        Value::Number(n) => Some(*n),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Registers `bit.*`, `cjson.*` and `cmsgpack.*` raw functions in `into` as `name_fn`.
pub fn register(lua: &Lua, into: &Table) -> mlua::Result<()> {
    into.raw_set(
        "bit",
        lua.create_function(|lua, (op, args): (String, Variadic<Value>)| bit(lua, &op, &args))?,
    )?;
    super::json::register(lua, into)?;
    into.raw_set(
        "msgpack_pack",
        lua.create_function(|lua, values: MultiValue| {
            let mut packed = Vec::new();
            for value in values.iter() {
                pack(value, &mut packed, 0);
            }
            results(lua, vec![Value::String(lua.create_string(&packed)?)])
        })?,
    )?;
    into.raw_set(
        "msgpack_unpack",
        lua.create_function(|lua, data: mlua::LuaString| {
            unpack_values(lua, &data.as_bytes(), usize::MAX, 0, false)
        })?,
    )?;
    into.raw_set(
        "msgpack_unpack_one",
        lua.create_function(|lua, (data, offset): (mlua::LuaString, Option<i64>)| {
            unpack_values(lua, &data.as_bytes(), 1, offset.unwrap_or(0), true)
        })?,
    )?;
    into.raw_set(
        "msgpack_unpack_limit",
        lua.create_function(
            |lua, (data, limit, offset): (mlua::LuaString, i64, Option<i64>)| {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                unpack_values(lua, &data.as_bytes(), limit, offset.unwrap_or(0), true)
            },
        )?,
    )?;
    Ok(())
}

// ---- bit ----

fn tobit(value: f64) -> i32 {
    // LuaBitOp: the number modulo 2^32, as a signed 32-bit integer.
    let wrapped = value.rem_euclid(4_294_967_296.0);
    (wrapped as u64 as u32) as i32
}

fn bit(lua: &Lua, op: &str, args: &[Value]) -> Raw {
    let mut ints = Vec::with_capacity(args.len());
    for (index, arg) in args.iter().enumerate() {
        match number(arg) {
            Some(n) => ints.push(tobit(n)),
            None => {
                return failure(
                    lua,
                    &format!("bad argument #{} to '{op}' (number expected)", index + 1),
                )
            }
        }
    }
    let first = ints.first().copied().unwrap_or(0);
    let shift = || (ints.get(1).copied().unwrap_or(0) & 31) as u32;
    let result: i32 = match op {
        "tobit" => first,
        "bnot" => !first,
        "band" => ints.iter().fold(-1, |acc, x| acc & x),
        "bor" => ints.iter().fold(0, |acc, x| acc | x),
        "bxor" => ints.iter().fold(0, |acc, x| acc ^ x),
        "lshift" => ((first as u32) << shift()) as i32,
        "rshift" => ((first as u32) >> shift()) as i32,
        "arshift" => first >> shift(),
        "rol" => (first as u32).rotate_left(shift()) as i32,
        "ror" => (first as u32).rotate_right(shift()) as i32,
        "bswap" => first.swap_bytes(),
        "tohex" => {
            let mut digits = args.get(1).and_then(number).map_or(8, |n| n as i64);
            let upper = digits < 0;
            digits = digits.unsigned_abs().min(8) as i64;
            let text = if upper {
                format!("{:08X}", first as u32)
            } else {
                format!("{:08x}", first as u32)
            };
            let text = &text[8 - digits as usize..];
            return results(lua, vec![Value::String(lua.create_string(text)?)]);
        }
        _ => return failure(lua, "unknown bit operation"),
    };
    results(lua, vec![Value::Number(result as f64)])
}

// ---- cmsgpack ----

fn pack(value: &Value, out: &mut Vec<u8>, depth: usize) {
    use rmp::encode;
    match value {
        Value::Nil => encode::write_nil(out).unwrap_or(()),
        Value::Boolean(b) => encode::write_bool(out, *b).unwrap_or(()),
        Value::Integer(n) => {
            let _ = encode::write_sint(out, *n);
        }
        Value::Number(n) => {
            if *n == n.trunc() && n.abs() < 9.2e18 {
                if *n >= 0.0 {
                    let _ = encode::write_uint(out, *n as u64);
                } else {
                    let _ = encode::write_sint(out, *n as i64);
                }
            } else if (*n as f32) as f64 == *n {
                let _ = encode::write_f32(out, *n as f32);
            } else {
                let _ = encode::write_f64(out, *n);
            }
        }
        Value::String(s) => {
            let bytes = s.as_bytes();
            let _ = encode::write_str_len(out, bytes.len() as u32);
            out.extend_from_slice(&bytes);
        }
        Value::Table(table) if depth < 16 => {
            // cmsgpack: an array when the keys are exactly 1..n, a map otherwise.
            let len = table.raw_len();
            let count = table.pairs::<Value, Value>().count();
            if len == count {
                let _ = encode::write_array_len(out, len as u32);
                for index in 1..=len {
                    let item: Value = table.raw_get(index).unwrap_or(Value::Nil);
                    pack(&item, out, depth + 1);
                }
            } else {
                let _ = encode::write_map_len(out, count as u32);
                for (key, item) in table.pairs::<Value, Value>().filter_map(Result::ok) {
                    pack(&key, out, depth + 1);
                    pack(&item, out, depth + 1);
                }
            }
        }
        _ => encode::write_nil(out).unwrap_or(()),
    }
}

/// Up to `limit` values packed in `data` from `offset` (lua-cmsgpack's `mp_unpack_full`).
/// `unpack_one` and `unpack_limit` (`with_offset`) return first the offset of the next value,
/// or -1 once the input is used up; a negative limit or offset is refused.
fn unpack_values(lua: &Lua, data: &[u8], limit: usize, offset: i64, with_offset: bool) -> Raw {
    let start = match usize::try_from(offset) {
        Ok(start) if start <= data.len() => start,
        Ok(_) => {
            return failure(
                lua,
                &format!(
                    "Start offset {offset} greater than input length {}.",
                    data.len()
                ),
            )
        }
        Err(_) => {
            return failure(
                lua,
                &format!(
                    "Invalid request to unpack with offset of {offset} and limit of {}.",
                    data.len()
                ),
            )
        }
    };
    let mut pos = start;
    let mut values = Vec::new();
    while pos < data.len() && values.len() < limit {
        match unpack(lua, data, &mut pos, 0) {
            Ok(value) => values.push(value),
            Err(error) => return failure(lua, &error.to_string()),
        }
    }
    if with_offset {
        let next = if pos == data.len() { -1 } else { pos as i64 };
        values.insert(0, Value::Integer(next));
    }
    results(lua, values)
}

/// Why `cmsgpack.unpack` fails: lua-cmsgpack's messages, which scripts see.
#[derive(Debug, thiserror::Error)]
enum UnpackError {
    #[error("Missing bytes in input.")]
    MissingBytes,
    #[error("Bad data format in input.")]
    BadFormat,
    #[error("{0}")]
    Lua(#[from] mlua::Error),
}

fn take<'a>(data: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], UnpackError> {
    if data.len() - *pos < len {
        return Err(UnpackError::MissingBytes);
    }
    let slice = &data[*pos..*pos + len];
    *pos += len;
    Ok(slice)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

fn unpack(lua: &Lua, data: &[u8], pos: &mut usize, depth: usize) -> Result<Value, UnpackError> {
    use rmp::Marker;
    if depth > 256 {
        return Err(UnpackError::BadFormat);
    }
    let marker = Marker::from_u8(take(data, pos, 1)?[0]);
    let string = |bytes: &[u8]| Ok(Value::String(lua.create_string(bytes)?));
    let int = |n: i64| Ok(Value::Number(n as f64));
    let sized = |pos: &mut usize, width: usize| take(data, pos, width).map(be);
    match marker {
        Marker::Null => Ok(Value::Nil),
        Marker::True => Ok(Value::Boolean(true)),
        Marker::False => Ok(Value::Boolean(false)),
        Marker::FixPos(n) => int(i64::from(n)),
        Marker::FixNeg(n) => int(i64::from(n)),
        Marker::U8 => int(sized(pos, 1)? as i64),
        Marker::U16 => int(sized(pos, 2)? as i64),
        Marker::U32 => int(sized(pos, 4)? as i64),
        Marker::U64 => Ok(Value::Number(sized(pos, 8)? as f64)),
        Marker::I8 => int(i64::from(sized(pos, 1)? as u8 as i8)),
        Marker::I16 => int(i64::from(sized(pos, 2)? as u16 as i16)),
        Marker::I32 => int(i64::from(sized(pos, 4)? as u32 as i32)),
        Marker::I64 => int(sized(pos, 8)? as i64),
        Marker::F32 => Ok(Value::Number(f64::from(f32::from_bits(
            sized(pos, 4)? as u32
        )))),
        Marker::F64 => Ok(Value::Number(f64::from_bits(sized(pos, 8)?))),
        Marker::FixStr(len) => string(take(data, pos, len as usize)?),
        Marker::Str8 | Marker::Bin8 => {
            let len = sized(pos, 1)? as usize;
            string(take(data, pos, len)?)
        }
        Marker::Str16 | Marker::Bin16 => {
            let len = sized(pos, 2)? as usize;
            string(take(data, pos, len)?)
        }
        Marker::Str32 | Marker::Bin32 => {
            let len = sized(pos, 4)? as usize;
            string(take(data, pos, len)?)
        }
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let len = match marker {
                Marker::FixArray(n) => n as usize,
                Marker::Array16 => sized(pos, 2)? as usize,
                _ => sized(pos, 4)? as usize,
            };
            let table = lua.create_table()?;
            for index in 1..=len {
                let item = unpack(lua, data, pos, depth + 1)?;
                table.raw_set(index, item)?;
            }
            Ok(Value::Table(table))
        }
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
            let len = match marker {
                Marker::FixMap(n) => n as usize,
                Marker::Map16 => sized(pos, 2)? as usize,
                _ => sized(pos, 4)? as usize,
            };
            let table = lua.create_table()?;
            for _ in 0..len {
                let key = unpack(lua, data, pos, depth + 1)?;
                let value = unpack(lua, data, pos, depth + 1)?;
                if !matches!(key, Value::Nil) {
                    table.raw_set(key, value)?;
                }
            }
            Ok(Value::Table(table))
        }
        _ => Err(UnpackError::BadFormat),
    }
}

/// A Lua number as Lua 5.1 turns it into a string (`%.14g`), for command arguments.
pub fn lua_number_text(n: f64) -> String {
    super::json::format_number(n).unwrap_or_else(|| {
        if n.is_nan() {
            "nan".into()
        } else if n > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    })
}
