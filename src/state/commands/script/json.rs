//! `cjson` for scripts, as Redis 7.0 ships lua-cjson 2.1: `encode` and `decode` (over
//! serde_json for parsing), `null`, and the settings scripts may change for the rest of the
//! Lua state's life (`encode_max_depth`, `decode_max_depth`, `encode_invalid_numbers`,
//! `encode_keep_buffer`), kept in one `JsonConfig` the functions share.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{LightUserData, Lua, Table, Value};

use super::libs::{failure, results};

/// What `encode` does with NaN and the infinities (`encode_invalid_numbers`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum InvalidNumbers {
    Refuse,
    Allow,
    Null,
}

/// lua-cjson's settings, with its defaults.
#[derive(Debug)]
struct JsonConfig {
    encode_max_depth: Cell<u32>,
    decode_max_depth: Cell<u32>,
    invalid_numbers: Cell<InvalidNumbers>,
    keep_buffer: Cell<bool>,
}

impl Default for JsonConfig {
    fn default() -> Self {
        JsonConfig {
            encode_max_depth: Cell::new(1000),
            decode_max_depth: Cell::new(1000),
            invalid_numbers: Cell::new(InvalidNumbers::Refuse),
            keep_buffer: Cell::new(true),
        }
    }
}

/// Registers `cjson.*` raw functions in `into` as `cjson_name`.
pub fn register(lua: &Lua, into: &Table) -> mlua::Result<()> {
    let config = Rc::new(JsonConfig::default());
    let encode_config = config.clone();
    into.raw_set(
        "cjson_encode",
        lua.create_function(move |lua, value: Value| {
            let mut text = Vec::new();
            match json_encode(&value, &mut text, 0, &encode_config) {
                Ok(()) => results(lua, vec![Value::String(lua.create_string(&text)?)]),
                Err(error) => failure(lua, &error.to_string()),
            }
        })?,
    )?;
    let decode_config = config.clone();
    into.raw_set(
        "cjson_decode",
        lua.create_function(move |lua, text: mlua::LuaString| {
            let text = text.as_bytes();
            if let Some((depth, at)) = too_deep(&text, decode_config.decode_max_depth.get()) {
                return failure(
                    lua,
                    &format!("Found too many nested data structures ({depth}) at character {at}"),
                );
            }
            match serde_json::from_slice::<serde_json::Value>(&text) {
                Ok(json) => results(lua, vec![json_to_lua(lua, &json)?]),
                Err(error) => failure(
                    lua,
                    &format!("Expected value but found invalid token: {error}"),
                ),
            }
        })?,
    )?;
    for (name, encode) in [
        ("cjson_encode_max_depth", true),
        ("cjson_decode_max_depth", false),
    ] {
        let config = config.clone();
        into.raw_set(
            name,
            lua.create_function(move |lua, depth: Option<Value>| {
                let setting = if encode {
                    &config.encode_max_depth
                } else {
                    &config.decode_max_depth
                };
                if let Some(depth) = depth {
                    match super::libs::number(&depth) {
                        Some(n) if (1.0..=f64::from(i32::MAX)).contains(&n) => {
                            setting.set(n as u32)
                        }
                        _ => return failure(
                            lua,
                            "bad argument #1 to '?' (expected integer between 1 and 2147483647)",
                        ),
                    }
                }
                results(lua, vec![Value::Integer(i64::from(setting.get()))])
            })?,
        )?;
    }
    let numbers_config = config.clone();
    into.raw_set(
        "cjson_encode_invalid_numbers",
        lua.create_function(move |lua, setting: Option<Value>| {
            let chosen = match &setting {
                None => numbers_config.invalid_numbers.get(),
                Some(Value::Boolean(true)) => InvalidNumbers::Allow,
                Some(Value::Boolean(false)) => InvalidNumbers::Refuse,
                Some(Value::String(text)) if text.as_bytes() == b"on" => InvalidNumbers::Allow,
                Some(Value::String(text)) if text.as_bytes() == b"off" => InvalidNumbers::Refuse,
                Some(Value::String(text)) if text.as_bytes() == b"null" => InvalidNumbers::Null,
                Some(_) => {
                    return failure(lua, "bad argument #1 to '?' (invalid option)");
                }
            };
            numbers_config.invalid_numbers.set(chosen);
            let current = match chosen {
                InvalidNumbers::Refuse => Value::Boolean(false),
                InvalidNumbers::Allow => Value::Boolean(true),
                InvalidNumbers::Null => Value::String(lua.create_string("null")?),
            };
            results(lua, vec![current])
        })?,
    )?;
    into.raw_set(
        "cjson_encode_keep_buffer",
        lua.create_function(move |lua, setting: Option<Value>| {
            match setting {
                None => {}
                Some(Value::Boolean(keep)) => config.keep_buffer.set(keep),
                Some(Value::String(text)) if text.as_bytes() == b"on" => {
                    config.keep_buffer.set(true)
                }
                Some(Value::String(text)) if text.as_bytes() == b"off" => {
                    config.keep_buffer.set(false)
                }
                Some(_) => return failure(lua, "bad argument #1 to '?' (invalid option)"),
            }
            results(lua, vec![Value::Boolean(config.keep_buffer.get())])
        })?,
    )?;
    Ok(())
}

/// The first array or object of `text` nested deeper than `max` (cjson checks as it
/// parses): its depth and its 1-based position, as cjson's error names them.
fn too_deep(text: &[u8], max: u32) -> Option<(u32, usize)> {
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for (at, &byte) in text.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some((depth, at + 1));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A finite number as cjson prints it (`%.14g`); `None` for NaN and the infinities.
pub(super) fn format_number(n: f64) -> Option<String> {
    if !n.is_finite() {
        return None;
    }
    if n == n.trunc() && n.abs() < 1e14 {
        return Some(format!("{}", n as i64));
    }
    // cjson prints %.14g.
    let text = format!("{:.13e}", n);
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-5..14).contains(&exponent) {
        let decimals = (13 - exponent).max(0) as usize;
        let fixed = format!("{:.*}", decimals, n);
        let fixed = if fixed.contains('.') {
            fixed
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        } else {
            fixed
        };
        Some(fixed)
    } else {
        let mantissa = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        let sign = if exponent < 0 { '-' } else { '+' };
        Some(format!("{mantissa}e{sign}{:02}", exponent.abs()))
    }
}

fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &byte in bytes {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{:04x}", byte).as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// A table's length as an array (keys 1..n), or `None` when it is an object.
fn array_length(table: &Table) -> Option<usize> {
    let mut max = 0usize;
    let mut count = 0usize;
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.ok()?;
        let index = match key {
            Value::Integer(i) if i >= 1 => i as usize,
            Value::Number(n) if n >= 1.0 && n == n.trunc() => n as usize,
            _ => return None,
        };
        max = max.max(index);
        count += 1;
    }
    // cjson's default "excessively sparse" rule: ratio 2, safe up to 10.
    if max > 10 && max > count * 2 {
        return None;
    }
    Some(max)
}

/// Why `cjson.encode` fails: cjson's messages, which scripts see.
#[derive(Debug, thiserror::Error)]
enum EncodeError {
    #[error("Cannot serialise, excessive nesting ({0})")]
    Nesting(u32),
    #[error("Cannot serialise number: must not be NaN or Inf")]
    NotFinite,
    #[error("Cannot serialise table: table key must be a number or string")]
    BadKey,
    #[error("Cannot serialise {0}: type not supported")]
    Unsupported(&'static str),
    #[error("{0}")]
    Lua(#[from] mlua::Error),
}

/// Appends `value` as JSON; `depth` counts the tables around it (cjson's `current_depth`,
/// which the top-level table makes 1).
fn json_encode(
    value: &Value,
    out: &mut Vec<u8>,
    depth: u32,
    config: &JsonConfig,
) -> Result<(), EncodeError> {
    match value {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(data) if data.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Number(n) => match (format_number(*n), config.invalid_numbers.get()) {
            (Some(text), _) => out.extend_from_slice(text.as_bytes()),
            (None, InvalidNumbers::Refuse) => return Err(EncodeError::NotFinite),
            (None, InvalidNumbers::Null) => out.extend_from_slice(b"null"),
            // `%.14g` of them, NaN's sign dropped (Redis's cjson prints `nan`, `inf`, `-inf`).
            (None, InvalidNumbers::Allow) if n.is_nan() => out.extend_from_slice(b"nan"),
            (None, InvalidNumbers::Allow) if *n < 0.0 => out.extend_from_slice(b"-inf"),
            (None, InvalidNumbers::Allow) => out.extend_from_slice(b"inf"),
        },
        Value::String(s) => json_string(&s.as_bytes(), out),
        Value::Table(_) if depth + 1 > config.encode_max_depth.get() => {
            return Err(EncodeError::Nesting(depth + 1))
        }
        Value::Table(table) => match array_length(table) {
            Some(len) if len > 0 => {
                out.push(b'[');
                for index in 1..=len {
                    if index > 1 {
                        out.push(b',');
                    }
                    let item: Value = table.raw_get(index)?;
                    json_encode(&item, out, depth + 1, config)?;
                }
                out.push(b']');
            }
            _ => {
                out.push(b'{');
                let mut first = true;
                for pair in table.pairs::<Value, Value>() {
                    let (key, item) = pair?;
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    match &key {
                        Value::String(s) => json_string(&s.as_bytes(), out),
                        Value::Integer(_) | Value::Number(_) => {
                            let mut text = Vec::new();
                            json_encode(&key, &mut text, depth + 1, config)?;
                            json_string(&text, out);
                        }
                        _ => return Err(EncodeError::BadKey),
                    }
                    out.push(b':');
                    json_encode(&item, out, depth + 1, config)?;
                }
                out.push(b'}');
            }
        },
        other => return Err(EncodeError::Unsupported(other.type_name())),
    }
    Ok(())
}

fn json_to_lua(lua: &Lua, json: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match json {
        serde_json::Value::Null => Value::LightUserData(LightUserData(std::ptr::null_mut())),
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let table = lua.create_table()?;
            for (index, item) in items.iter().enumerate() {
                table.raw_set(index + 1, json_to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
        serde_json::Value::Object(map) => {
            let table = lua.create_table()?;
            for (key, item) in map {
                table.raw_set(key.as_str(), json_to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_past_the_decode_limit_is_found_where_cjson_stops() {
        let text = br#"{"obj": {"array": [1,2]}}"#;
        assert_eq!(too_deep(text, 3), None);
        assert_eq!(too_deep(text, 2), Some((3, 19)));
        assert_eq!(too_deep(text, 1), Some((2, 9)));
    }

    #[test]
    fn brackets_inside_strings_do_not_nest() {
        assert_eq!(too_deep(br#"["[[[\"{{"]"#, 1), None);
        assert_eq!(too_deep(br#"["\\", [1]]"#, 1), Some((2, 8)));
    }

    #[test]
    fn encoding_respects_the_depth_and_invalid_number_settings() {
        let lua = Lua::new();
        let config = JsonConfig::default();
        let nested: Value = lua.load("return {a = {1}}").eval().unwrap();
        let mut out = Vec::new();
        json_encode(&nested, &mut out, 0, &config).unwrap();
        assert_eq!(out, br#"{"a":[1]}"#);
        config.encode_max_depth.set(1);
        let error = json_encode(&nested, &mut Vec::new(), 0, &config).unwrap_err();
        assert_eq!(error.to_string(), "Cannot serialise, excessive nesting (2)");
        let infinite = Value::Number(f64::NEG_INFINITY);
        let error = json_encode(&infinite, &mut Vec::new(), 0, &config).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Cannot serialise number: must not be NaN or Inf"
        );
        for (setting, printed) in [
            (InvalidNumbers::Allow, &b"-inf"[..]),
            (InvalidNumbers::Null, b"null"),
        ] {
            config.invalid_numbers.set(setting);
            let mut out = Vec::new();
            json_encode(&infinite, &mut out, 0, &config).unwrap();
            assert_eq!(out, printed);
        }
    }
}
