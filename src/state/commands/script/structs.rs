//! The `struct` library Redis gives scripts (Roberto Ierusalimschy's lua_struct, as Redis 7.0
//! ships it): `struct.pack(fmt, …)`, `struct.unpack(fmt, data [, pos])` and `struct.size(fmt)`
//! on a 64-bit little-endian machine, with its formats (`<` `>` `!n` `x` `b` `B` `h` `H` `l` `L`
//! `T` `i[n]` `I[n]` `c[n]` `s` `f` `d`, blanks), its alignment arithmetic, its quirks (an
//! integer of more than eight bytes keeps only eight of them; `string too short` names the
//! argument after the string, as the C code does) and its error texts. Like the other
//! libraries' raw functions (`libs`), each answers `true, {results…}` or `false, message`.

use mlua::{Lua, MultiValue, Table, Value};

use super::libs::{failure, lua_number_text, results};

/// lua_struct's `MAXINTSIZE` and `MAXALIGN` (the alignment of a double on x86-64).
const MAX_INT_SIZE: i64 = 32;
const MAX_ALIGN: i64 = 8;

/// Registers `struct_pack`, `struct_unpack` and `struct_size` in `into`.
pub fn register(lua: &Lua, into: &Table) -> mlua::Result<()> {
    into.raw_set(
        "struct_pack",
        lua.create_function(|lua, args: MultiValue| {
            let args: Vec<Value> = args.into_iter().collect();
            match pack(&args) {
                Ok(bytes) => results(lua, vec![Value::String(lua.create_string(&bytes)?)]),
                Err(message) => failure(lua, &message),
            }
        })?,
    )?;
    into.raw_set(
        "struct_unpack",
        lua.create_function(|lua, args: MultiValue| {
            let args: Vec<Value> = args.into_iter().collect();
            match unpack(lua, &args)? {
                Ok(values) => results(lua, values),
                Err(message) => failure(lua, &message),
            }
        })?,
    )?;
    into.raw_set(
        "struct_size",
        lua.create_function(|lua, args: MultiValue| {
            let args: Vec<Value> = args.into_iter().collect();
            match size(&args) {
                Ok(size) => results(lua, vec![Value::Number(size as f64)]),
                Err(message) => failure(lua, &message),
            }
        })?,
    )?;
    Ok(())
}

type Failed<T> = Result<T, String>;

/// Lua's `bad argument #N to 'NAME' (why)`.
fn bad_argument(index: usize, function: &str, why: &str) -> String {
    format!("bad argument #{index} to '{function}' ({why})")
}

/// Lua's name of the type of argument `index` (1-based), `no value` past the last.
fn type_name(args: &[Value], index: usize) -> &'static str {
    match args.get(index - 1) {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_) | Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(_) => "userdata",
    }
}

/// A string as Lua's `tonumber` reads it (decimal or `0x` hex, blanks around).
fn string_number(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(|n| n as f64),
        None => text.parse().ok(),
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(n) => Some(*n as f64),
        Value::Number(n) => Some(*n),
        Value::String(s) => string_number(&s.as_bytes()),
        _ => None,
    }
}

/// A double to a C `long` as x86-64 truncates it: out of range or NaN is the lowest long.
fn truncate(n: f64) -> i64 {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if n.is_nan() || !(-LIMIT..LIMIT).contains(&n) {
        i64::MIN
    } else {
        n as i64
    }
}

/// A double to a C `unsigned long` as gcc compiles it for x86-64 (so 2^64 and past are 0).
fn truncate_unsigned(n: f64) -> u64 {
    const HALF: f64 = 9_223_372_036_854_775_808.0;
    if n >= HALF {
        truncate(n - HALF) as u64 ^ (1 << 63)
    } else {
        truncate(n) as u64
    }
}

/// What an argument that is not of the type wanted is called. pack's values are followed by a
/// nil of its own on the C stack, so a value missing right after the last reads as `nil`.
fn got(args: &[Value], index: usize, function: &str) -> &'static str {
    if function == "pack" && index > 1 && index == args.len() + 1 {
        "nil"
    } else {
        type_name(args, index)
    }
}

/// `luaL_checknumber`.
fn number_arg(args: &[Value], index: usize, function: &str) -> Failed<f64> {
    args.get(index - 1).and_then(as_number).ok_or_else(|| {
        let got = got(args, index, function);
        bad_argument(index, function, &format!("number expected, got {got}"))
    })
}

/// `luaL_checklstring`: a string, or a number as Lua writes it.
fn string_arg(args: &[Value], index: usize, function: &str) -> Failed<Vec<u8>> {
    match args.get(index - 1) {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(Value::Integer(n)) => Ok(n.to_string().into_bytes()),
        Some(Value::Number(n)) => Ok(lua_number_text(*n).into_bytes()),
        _ => {
            let got = got(args, index, function);
            Err(bad_argument(
                index,
                function,
                &format!("string expected, got {got}"),
            ))
        }
    }
}

/// The byte order and alignment a format has set so far.
struct Header {
    big_endian: bool,
    align: u64,
}

impl Default for Header {
    fn default() -> Header {
        Header {
            big_endian: false,
            align: 1,
        }
    }
}

/// A format string, read option by option.
struct Format<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Format<'_> {
    fn next(&mut self) -> Option<u8> {
        let option = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(option)
    }

    /// The number after an option, or `default`; lua_struct's overflow check.
    fn number(&mut self, default: i64) -> Failed<i64> {
        if !self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            return Ok(default);
        }
        let mut value: i64 = 0;
        while let Some(digit) = self.bytes.get(self.at).filter(|b| b.is_ascii_digit()) {
            let digit = i64::from(digit - b'0');
            if value > i64::from(i32::MAX) / 10 || value * 10 > i64::from(i32::MAX) - digit {
                return Err("integral size overflow".into());
            }
            value = value * 10 + digit;
            self.at += 1;
        }
        Ok(value)
    }

    /// The size an option takes (0 for the control options and `s`).
    fn size(&mut self, option: u8) -> Failed<u64> {
        Ok(match option {
            b'b' | b'B' | b'x' => 1,
            b'h' | b'H' => 2,
            b'f' => 4,
            b'l' | b'L' | b'T' | b'd' => 8,
            b'c' => self.number(1)? as u64,
            b'i' | b'I' => {
                let size = self.number(4)?;
                if size > MAX_INT_SIZE {
                    return Err(format!(
                        "integral size {size} is larger than limit of {MAX_INT_SIZE}"
                    ));
                }
                size as u64
            }
            _ => 0,
        })
    }

    /// A control option (blank, `<`, `>`, `!n`); any other is refused for `function`.
    fn control(&mut self, option: u8, header: &mut Header, function: &str) -> Failed<()> {
        match option {
            b' ' => {}
            b'>' => header.big_endian = true,
            b'<' => header.big_endian = false,
            b'!' => {
                let align = self.number(MAX_ALIGN)?;
                if align <= 0 || align & (align - 1) != 0 {
                    return Err(format!("alignment {align} is not a power of 2"));
                }
                header.align = align as u64;
            }
            _ => {
                let why = format!("invalid format option '{}'", char::from(option));
                return Err(bad_argument(1, function, &why));
            }
        }
        Ok(())
    }
}

/// Padding before an item of `size` bytes at offset `len` (lua_struct's arithmetic, kept as it
/// is for sizes that are not powers of two).
fn padding(len: u64, header: &Header, option: u8, size: u64) -> u64 {
    if size == 0 || option == b'c' {
        return 0;
    }
    let size = size.min(header.align);
    size.wrapping_sub(len & (size - 1)) & (size - 1)
}

fn is_integer(option: u8) -> bool {
    matches!(
        option,
        b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I'
    )
}

fn pack(args: &[Value]) -> Failed<Vec<u8>> {
    let format = string_arg(args, 1, "pack")?;
    let mut format = Format {
        bytes: &format,
        at: 0,
    };
    let mut header = Header::default();
    let mut out = Vec::new();
    let mut arg = 2;
    let mut total: u64 = 0;
    while let Some(option) = format.next() {
        let mut size = format.size(option)?;
        let pad = padding(total, &header, option, size);
        total += pad;
        out.resize(out.len() + pad as usize, 0);
        match option {
            _ if is_integer(option) => {
                let n = number_arg(args, arg, "pack")?;
                arg += 1;
                let mut value = if n < 0.0 {
                    truncate(n) as u64
                } else {
                    truncate_unsigned(n)
                };
                let mut bytes = vec![0u8; size as usize];
                for index in 0..bytes.len() {
                    let at = if header.big_endian {
                        bytes.len() - 1 - index
                    } else {
                        index
                    };
                    bytes[at] = (value & 0xff) as u8;
                    value >>= 8;
                }
                out.extend_from_slice(&bytes);
            }
            b'x' => out.push(0),
            b'f' => {
                let n = number_arg(args, arg, "pack")? as f32;
                arg += 1;
                out.extend_from_slice(&if header.big_endian {
                    n.to_be_bytes()
                } else {
                    n.to_le_bytes()
                });
            }
            b'd' => {
                let n = number_arg(args, arg, "pack")?;
                arg += 1;
                out.extend_from_slice(&if header.big_endian {
                    n.to_be_bytes()
                } else {
                    n.to_le_bytes()
                });
            }
            b'c' | b's' => {
                let text = string_arg(args, arg, "pack")?;
                arg += 1;
                if size == 0 {
                    size = text.len() as u64;
                }
                if (text.len() as u64) < size {
                    // The C code names the argument after the string.
                    return Err(bad_argument(arg, "pack", "string too short"));
                }
                out.extend_from_slice(&text[..size as usize]);
                if option == b's' {
                    out.push(0);
                    size += 1;
                }
            }
            _ => format.control(option, &mut header, "pack")?,
        }
        total += size;
    }
    Ok(out)
}

/// The unsigned or signed integer of `bytes` (at most eight of them count, as in lua_struct).
fn read_integer(bytes: &[u8], big_endian: bool, signed: bool) -> f64 {
    let mut value: u64 = 0;
    let mut push = |byte: &u8| value = (value << 8) | u64::from(*byte);
    if big_endian {
        bytes.iter().for_each(&mut push);
    } else {
        bytes.iter().rev().for_each(&mut push);
    }
    if !signed {
        return value as f64;
    }
    // The shift wraps as x86's does for the sizes C leaves undefined.
    let mask = u64::MAX.wrapping_shl((bytes.len() as i64 * 8 - 1) as u32);
    if value & mask != 0 {
        value |= mask;
    }
    value as i64 as f64
}

fn unpack(lua: &Lua, args: &[Value]) -> mlua::Result<Failed<Vec<Value>>> {
    let fail = |message: String| Ok(Err(message));
    let format = match string_arg(args, 1, "unpack") {
        Ok(format) => format,
        Err(message) => return fail(message),
    };
    let data = match string_arg(args, 2, "unpack") {
        Ok(data) => data,
        Err(message) => return fail(message),
    };
    let start = match args.get(2) {
        None | Some(Value::Nil) => 1,
        Some(value) => match as_number(value) {
            Some(n) => n as i64,
            None => {
                let got = type_name(args, 3);
                let why = format!("number expected, got {got}");
                return fail(bad_argument(3, "unpack", &why));
            }
        },
    };
    if start == 0 {
        return fail(bad_argument(3, "unpack", "offset must be 1 or greater"));
    }
    // A size_t in C: a negative offset wraps to a huge one.
    let mut pos = (start as u64).wrapping_sub(1);
    let len = data.len() as u64;
    let too_short = || bad_argument(2, "unpack", "data string too short");
    let mut format = Format {
        bytes: &format,
        at: 0,
    };
    let mut header = Header::default();
    let mut values: Vec<Value> = Vec::new();
    while let Some(option) = format.next() {
        let mut size = match format.size(option) {
            Ok(size) => size,
            Err(message) => return fail(message),
        };
        pos = pos.wrapping_add(padding(pos, &header, option, size));
        if size > len || pos > len - size {
            return fail(too_short());
        }
        let at = pos as usize;
        match option {
            _ if is_integer(option) => {
                let bytes = &data[at..at + size as usize];
                let signed = option.is_ascii_lowercase();
                values.push(Value::Number(read_integer(
                    bytes,
                    header.big_endian,
                    signed,
                )));
            }
            b'x' => {}
            b'f' => {
                let bytes: [u8; 4] = data[at..at + 4].try_into().expect("four bytes");
                let n = if header.big_endian {
                    f32::from_be_bytes(bytes)
                } else {
                    f32::from_le_bytes(bytes)
                };
                values.push(Value::Number(f64::from(n)));
            }
            b'd' => {
                let bytes: [u8; 8] = data[at..at + 8].try_into().expect("eight bytes");
                let n = if header.big_endian {
                    f64::from_be_bytes(bytes)
                } else {
                    f64::from_le_bytes(bytes)
                };
                values.push(Value::Number(n));
            }
            b'c' => {
                if size == 0 {
                    let Some(previous) = values.last().and_then(as_number) else {
                        return fail("format 'c0' needs a previous size".into());
                    };
                    values.pop();
                    size = truncate_unsigned(previous);
                    if size > len || pos > len - size {
                        return fail(too_short());
                    }
                }
                let bytes = &data[at..at + size as usize];
                values.push(Value::String(lua.create_string(bytes)?));
            }
            b's' => {
                let Some(end) = data[at..].iter().position(|&byte| byte == 0) else {
                    return fail("unfinished string in data".into());
                };
                values.push(Value::String(lua.create_string(&data[at..at + end])?));
                size = end as u64 + 1;
            }
            _ => {
                if let Err(message) = format.control(option, &mut header, "unpack") {
                    return fail(message);
                }
            }
        }
        pos = pos.wrapping_add(size);
    }
    values.push(Value::Number(pos.wrapping_add(1) as i64 as f64));
    Ok(Ok(values))
}

fn size(args: &[Value]) -> Failed<u64> {
    let format = string_arg(args, 1, "size")?;
    let mut format = Format {
        bytes: &format,
        at: 0,
    };
    let mut header = Header::default();
    let mut pos: u64 = 0;
    while let Some(option) = format.next() {
        let size = format.size(option)?;
        pos += padding(pos, &header, option, size);
        if option == b's' {
            return Err(bad_argument(1, "size", "option 's' has no fixed size"));
        }
        if option == b'c' && size == 0 {
            return Err(bad_argument(1, "size", "option 'c0' has no fixed size"));
        }
        // Letters it does not know add nothing; other characters must be control options.
        if !option.is_ascii_alphanumeric() {
            format.control(option, &mut header, "size")?;
        }
        pos += size;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lua: &Lua, s: &[u8]) -> Value {
        Value::String(lua.create_string(s).unwrap())
    }

    #[test]
    fn packs_and_unpacks_with_lua_structs_layout() {
        let lua = Lua::new();
        let packed = pack(&[
            text(&lua, b">!4bihc0s"),
            Value::Number(-2.0),
            Value::Number(258.0),
            Value::Number(-1.0),
            text(&lua, b"ab"),
            text(&lua, b"z"),
        ])
        .unwrap();
        assert_eq!(packed, b"\xfe\0\0\0\0\0\x01\x02\xff\xffabz\0".to_vec());
        let values = unpack(&lua, &[text(&lua, b">!4bihc2s"), text(&lua, &packed)])
            .unwrap()
            .unwrap();
        let numbers: Vec<Option<f64>> = values.iter().map(as_number).collect();
        assert_eq!(numbers[..3], [Some(-2.0), Some(258.0), Some(-1.0)]);
        assert_eq!(numbers[5], Some(15.0));
        assert_eq!(size(&[text(&lua, b"!4bi")]), Ok(8));
        assert_eq!(size(&[text(&lua, b"q")]), Ok(0));
        assert_eq!(
            pack(&[text(&lua, b"c3"), text(&lua, b"ab")]),
            Err("bad argument #3 to 'pack' (string too short)".into())
        );
        assert_eq!(
            pack(&[text(&lua, b"i99")]),
            Err("integral size 99 is larger than limit of 32".into())
        );
    }
}
