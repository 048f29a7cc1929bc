//! Redis's conversions between replies and Lua values, both ways, as Redis 7.0's
//! `script_lua.c` does them: a command's reply (read back from the RESP its handler wrote)
//! becomes a Lua value for `redis.call`, and the script's result becomes the client's reply.

use mlua::{Lua, Table, Value};

use crate::state::reply::Out;

/// Most levels of nested tables turned into a reply: a deeper table is replied as Redis's
/// error at its Lua stack limit, so a self-referencing table cannot recurse forever.
const MAX_DEPTH: usize = 64;

/// One RESP reply of `buf` from `*pos` as a Lua value (RESP2 and the RESP3 types).
pub fn reply_to_lua(lua: &Lua, buf: &[u8], pos: &mut usize) -> mlua::Result<Value> {
    let line_end = find_crlf(buf, *pos);
    let kind = buf[*pos];
    let line = &buf[*pos + 1..line_end];
    *pos = line_end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || text().parse::<i64>().unwrap_or(0);
    Ok(match kind {
        b':' => Value::Integer(number()),
        b'$' | b'=' => {
            let len = number();
            if len < 0 {
                return Ok(Value::Boolean(false));
            }
            let len = len as usize;
            let mut data = &buf[*pos..*pos + len];
            *pos += len + 2;
            if kind == b'=' && data.len() >= 4 {
                data = &data[4..];
            }
            Value::String(lua.create_string(data)?)
        }
        b'+' => {
            let table = lua.create_table()?;
            table.raw_set("ok", lua.create_string(line)?)?;
            Value::Table(table)
        }
        b'-' => {
            let table = lua.create_table()?;
            table.raw_set("err", lua.create_string(line)?)?;
            Value::Table(table)
        }
        b'*' | b'~' | b'>' => {
            let len = number();
            if len < 0 {
                return Ok(Value::Boolean(false));
            }
            let items = lua.create_table()?;
            for index in 1..=len as usize {
                let item = reply_to_lua(lua, buf, pos)?;
                items.raw_set(index, item)?;
            }
            if kind == b'~' {
                let set = lua.create_table()?;
                let members = lua.create_table()?;
                for value in items.sequence_values::<Value>() {
                    members.raw_set(value?, true)?;
                }
                set.raw_set("set", members)?;
                Value::Table(set)
            } else {
                Value::Table(items)
            }
        }
        b'%' => {
            let len = number();
            let map = lua.create_table()?;
            for _ in 0..len {
                let key = reply_to_lua(lua, buf, pos)?;
                let value = reply_to_lua(lua, buf, pos)?;
                map.raw_set(key, value)?;
            }
            let outer = lua.create_table()?;
            outer.raw_set("map", map)?;
            Value::Table(outer)
        }
        b'_' => Value::Nil,
        b'#' => Value::Boolean(line == b"t"),
        b',' => {
            let table = lua.create_table()?;
            table.raw_set("double", text().parse::<f64>().unwrap_or(0.0))?;
            Value::Table(table)
        }
        _ => Value::Nil,
    })
}

fn find_crlf(buf: &[u8], from: usize) -> usize {
    buf[from..]
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .map_or(buf.len(), |at| from + at)
}

/// The script's result as the client's reply (`luaReplyToRedisReply`).
pub fn lua_to_reply(value: &Value, out: &mut Out, resp3_script: bool) {
    write_value(value, out, resp3_script, 0);
}

fn write_value(value: &Value, out: &mut Out, resp3: bool, depth: usize) {
    match value {
        Value::String(text) => out.bulk(&text.as_bytes()),
        Value::Boolean(true) => {
            if resp3 && out.resp3 {
                out.buf.extend_from_slice(b"#t\r\n");
            } else {
                out.int(1);
            }
        }
        Value::Boolean(false) => {
            if resp3 && out.resp3 {
                out.buf.extend_from_slice(b"#f\r\n");
            } else if resp3 {
                out.int(0);
            } else {
                out.null();
            }
        }
        Value::Integer(number) => out.int(*number),
        Value::Number(number) => out.int(truncate(*number)),
        Value::Table(table) if depth < MAX_DEPTH => write_table(table, out, resp3, depth),
        Value::Table(_) => out.error("ERR reached lua stack limit"),
        _ => out.null(),
    }
}

/// `(long long)` of a Lua number, as C casts it (saturating here instead of undefined).
pub fn truncate(number: f64) -> i64 {
    if number.is_nan() {
        i64::MIN
    } else {
        number as i64
    }
}

fn write_table(table: &Table, out: &mut Out, resp3: bool, depth: usize) {
    if let Ok(Value::String(err)) = table.raw_get::<Value>("err") {
        let text = String::from_utf8_lossy(&err.as_bytes()).into_owned();
        out.error(&text);
        return;
    }
    if let Ok(Value::String(ok)) = table.raw_get::<Value>("ok") {
        let text = String::from_utf8_lossy(&ok.as_bytes()).replace(['\r', '\n'], " ");
        out.simple(&text);
        return;
    }
    if let Ok(Value::Number(double)) = table.raw_get::<Value>("double") {
        out.double(double);
        return;
    }
    if let Ok(Value::Integer(double)) = table.raw_get::<Value>("double") {
        out.double(double as f64);
        return;
    }
    if let Ok(Value::Table(map)) = table.raw_get::<Value>("map") {
        let pairs: Vec<(Value, Value)> =
            map.pairs::<Value, Value>().filter_map(Result::ok).collect();
        out.map_header(pairs.len());
        for (key, value) in &pairs {
            write_value(key, out, resp3, depth + 1);
            write_value(value, out, resp3, depth + 1);
        }
        return;
    }
    if let Ok(Value::Table(set)) = table.raw_get::<Value>("set") {
        let members: Vec<Value> = set
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(key, _)| key)
            .collect();
        out.set_header(members.len());
        for member in &members {
            write_value(member, out, resp3, depth + 1);
        }
        return;
    }
    // An array: items 1, 2, … up to the first nil.
    let mut items = Vec::new();
    for index in 1.. {
        match table.raw_get::<Value>(index) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(value) => items.push(value),
        }
    }
    out.array_header(items.len());
    for item in &items {
        write_value(item, out, resp3, depth + 1);
    }
}
