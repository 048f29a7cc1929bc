//! Bitmaps: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD (and BITFIELD_RO). Bit 0 is the
//! most significant bit of the first byte, as in Redis.

use bytes::Bytes;

use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::db::Value;
use crate::state::notify;
use crate::state::reply::text;

const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";
/// Highest bit offset (a 512 MB string).
const MAX_BIT: i64 = 512 * 1024 * 1024 * 8 - 1;

fn bit_offset(arg: &[u8]) -> Result<u64, Fail> {
    crate::state::number::parse_i64(arg)
        .filter(|offset| (0..=MAX_BIT).contains(offset))
        .map(|offset| offset as u64)
        .ok_or(Fail::from(BAD_OFFSET))
}

fn get_bit(bytes: &[u8], offset: u64) -> bool {
    bytes
        .get((offset / 8) as usize)
        .is_some_and(|byte| byte >> (7 - offset % 8) & 1 == 1)
}

fn put_bit(bytes: &mut Vec<u8>, offset: u64, on: bool) {
    let index = (offset / 8) as usize;
    if bytes.len() <= index {
        bytes.resize(index + 1, 0);
    }
    let mask = 1u8 << (7 - offset % 8);
    if on {
        bytes[index] |= mask;
    } else {
        bytes[index] &= !mask;
    }
}

fn store_bytes(ctx: &mut Ctx, key: &[u8], bytes: Vec<u8>) {
    ctx.store.db.replace_value(key, Value::Str(bytes.into()));
    ctx.changed();
}

pub fn setbit(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let offset = bit_offset(&args[2])?;
    let on = match args[3].as_ref() {
        b"1" => true,
        b"0" => false,
        _ => return Err("ERR bit is not an integer or out of range".into()),
    };
    let current = ctx.string(&args[1])?;
    let existed = current.is_some();
    let mut bytes = current.map(|value| value.to_vec()).unwrap_or_default();
    let len = bytes.len();
    let old = get_bit(&bytes, offset);
    put_bit(&mut bytes, offset, on);
    // Redis tells of a SETBIT that created the key, grew it or flipped the bit.
    let changed = !existed || bytes.len() > len || old != on;
    store_bytes(ctx, &args[1], bytes);
    if changed {
        ctx.notify(notify::STRING, "setbit", &args[1]);
    }
    ctx.out.int(i64::from(old));
    Ok(())
}

pub fn getbit(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let offset = bit_offset(&args[2])?;
    let bit = ctx
        .string(&args[1])?
        .is_some_and(|value| get_bit(value, offset));
    ctx.out.int(i64::from(bit));
    Ok(())
}

/// A `start end [BYTE|BIT]` range as an inclusive range of bits, or `None` when empty.
/// `end` is `None` when not given (BITPOS: to the end).
fn bit_range(
    len: usize,
    start: i64,
    end: Option<i64>,
    unit: Option<&Bytes>,
) -> Result<Option<(u64, u64)>, Fail> {
    let bits = match unit.map(|unit| unit.to_ascii_lowercase()) {
        None => false,
        Some(unit) if unit == b"byte" => false,
        Some(unit) if unit == b"bit" => true,
        Some(_) => return Err(text::SYNTAX.into()),
    };
    let total = if bits { len as i64 * 8 } else { len as i64 };
    let end = end.unwrap_or(total - 1);
    if start < 0 && end < 0 && start > end {
        return Ok(None);
    }
    let start = if start < 0 {
        (total + start).max(0)
    } else {
        start
    };
    let end = if end < 0 { (total + end).max(0) } else { end };
    let end = end.min(total - 1);
    if start > end || total == 0 {
        return Ok(None);
    }
    Ok(Some(if bits {
        (start as u64, end as u64)
    } else {
        (start as u64 * 8, end as u64 * 8 + 7)
    }))
}

pub fn bitcount(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let range = match args.len() {
        2 => None,
        4 | 5 => Some((int_arg(&args[2])?, int_arg(&args[3])?)),
        _ => return Err(text::SYNTAX.into()),
    };
    let Some(value) = ctx.string(&args[1])?.cloned() else {
        ctx.out.int(0);
        return Ok(());
    };
    let (first, last) = match range {
        None if value.is_empty() => {
            ctx.out.int(0);
            return Ok(());
        }
        None => (0, value.len() as u64 * 8 - 1),
        Some((start, end)) => match bit_range(value.len(), start, Some(end), args.get(4))? {
            Some(range) => range,
            None => {
                ctx.out.int(0);
                return Ok(());
            }
        },
    };
    let count = count_bits(&value, first, last);
    ctx.out.int(count as i64);
    Ok(())
}

fn count_bits(bytes: &[u8], first: u64, last: u64) -> u64 {
    let (first_byte, last_byte) = ((first / 8) as usize, (last / 8) as usize);
    let mut count = 0u64;
    for (index, byte) in bytes[first_byte..=last_byte].iter().enumerate() {
        let index = first_byte + index;
        let mut byte = *byte;
        if index == first_byte {
            byte &= 0xff >> (first % 8);
        }
        if index == last_byte {
            byte &= 0xffu8 << (7 - last % 8);
        }
        count += u64::from(byte.count_ones());
    }
    count
}

pub fn bitpos(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let wanted = match int_arg(&args[2])? {
        0 => false,
        1 => true,
        _ => return Err("ERR The bit argument must be 1 or 0.".into()),
    };
    if args.len() > 6 {
        return Err(text::SYNTAX.into());
    }
    let Some(value) = ctx.string(&args[1])?.cloned() else {
        ctx.out.int(if wanted { -1 } else { 0 });
        return Ok(());
    };
    let start = args.get(3).map(|arg| int_arg(arg)).transpose()?;
    let end = args.get(4).map(|arg| int_arg(arg)).transpose()?;
    let range = bit_range(value.len(), start.unwrap_or(0), end, args.get(5))?;
    let Some((first, last)) = range else {
        ctx.out.int(-1);
        return Ok(());
    };
    let found = (first..=last).find(|bit| get_bit(&value, *bit) == wanted);
    let position = match found {
        Some(bit) => bit as i64,
        // Past the end a string is all zeros, unless an end was given.
        None if !wanted && end.is_none() => last as i64 + 1,
        None => -1,
    };
    ctx.out.int(position);
    Ok(())
}

pub fn bitop(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let op = args[1].to_ascii_lowercase();
    if !matches!(op.as_slice(), b"and" | b"or" | b"xor" | b"not") {
        return Err(text::SYNTAX.into());
    }
    if op == b"not" && args.len() != 4 {
        return Err("ERR BITOP NOT must be called with a single source key.".into());
    }
    let mut sources = Vec::new();
    for key in &args[3..] {
        sources.push(ctx.string(key)?.cloned().unwrap_or_default());
    }
    let len = sources.iter().map(|source| source.len()).max().unwrap_or(0);
    let mut result = vec![0u8; len];
    for (index, byte) in result.iter_mut().enumerate() {
        let mut bytes = sources
            .iter()
            .map(|source| source.get(index).copied().unwrap_or(0));
        let first = bytes.next().unwrap_or(0);
        *byte = match op.as_slice() {
            b"not" => !first,
            b"and" => bytes.fold(first, |a, b| a & b),
            b"or" => bytes.fold(first, |a, b| a | b),
            _ => bytes.fold(first, |a, b| a ^ b),
        };
    }
    let dest = &args[2];
    if result.is_empty() {
        if ctx.store.db.remove(dest, ctx.now).is_some() {
            ctx.notify(notify::GENERIC, "del", dest);
            ctx.changed();
        }
    } else {
        ctx.store.db.set(dest, Value::Str(result.into()), None);
        ctx.notify(notify::STRING, "set", dest);
        ctx.changed();
    }
    ctx.out.int(len as i64);
    Ok(())
}

/// A BITFIELD type: signed or not, and its width in bits.
#[derive(Clone, Copy)]
struct Field {
    signed: bool,
    bits: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

enum Op {
    Get(Field, u64),
    Set(Field, u64, i64, Overflow),
    Incr(Field, u64, i64, Overflow),
}

fn field_type(arg: &[u8]) -> Result<Field, Fail> {
    let invalid = || {
        Fail::from("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.")
    };
    let (signed, width) = match arg.first().map(u8::to_ascii_lowercase) {
        Some(b'i') => (true, &arg[1..]),
        Some(b'u') => (false, &arg[1..]),
        _ => return Err(invalid()),
    };
    let bits = crate::state::number::parse_i64(width).ok_or_else(invalid)?;
    if bits < 1 || (signed && bits > 64) || (!signed && bits > 63) {
        return Err(invalid());
    }
    Ok(Field {
        signed,
        bits: bits as u32,
    })
}

fn field_offset(arg: &[u8], field: Field) -> Result<u64, Fail> {
    let (multiply, number) = match arg.strip_prefix(b"#") {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    let offset = crate::state::number::parse_i64(number)
        .filter(|offset| *offset >= 0)
        .ok_or(Fail::from(BAD_OFFSET))?;
    let offset = if multiply {
        offset
            .checked_mul(i64::from(field.bits))
            .ok_or(Fail::from(BAD_OFFSET))?
    } else {
        offset
    };
    if offset + i64::from(field.bits) - 1 > MAX_BIT {
        return Err(BAD_OFFSET.into());
    }
    Ok(offset as u64)
}

fn read_field(bytes: &[u8], offset: u64, field: Field) -> i64 {
    let mut value: u64 = 0;
    for bit in 0..u64::from(field.bits) {
        value = value << 1 | u64::from(get_bit(bytes, offset + bit));
    }
    if field.signed && field.bits < 64 && value >> (field.bits - 1) & 1 == 1 {
        value |= u64::MAX << field.bits;
    }
    value as i64
}

fn write_field(bytes: &mut Vec<u8>, offset: u64, field: Field, value: i64) {
    let value = value as u64;
    for bit in 0..u64::from(field.bits) {
        let on = value >> (u64::from(field.bits) - 1 - bit) & 1 == 1;
        put_bit(bytes, offset + bit, on);
    }
}

/// `value` fitted into `field` by `overflow`; `None` when FAIL refuses it.
fn fit(value: i128, field: Field, overflow: Overflow) -> Option<i64> {
    let (min, max) = if field.signed {
        (
            -(1i128 << (field.bits - 1)),
            (1i128 << (field.bits - 1)) - 1,
        )
    } else {
        (0, (1i128 << field.bits) - 1)
    };
    if (min..=max).contains(&value) {
        return Some(value as i64);
    }
    match overflow {
        Overflow::Fail => None,
        Overflow::Sat => Some(if value > max { max } else { min } as i64),
        Overflow::Wrap => {
            let span = 1i128 << field.bits;
            let mut wrapped = value.rem_euclid(span);
            if field.signed && wrapped > max {
                wrapped -= span;
            }
            Some(wrapped as i64)
        }
    }
}

fn parse_ops(args: &[Bytes], read_only: bool) -> Result<Vec<Op>, Fail> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut i = 2;
    while i < args.len() {
        let name = args[i].to_ascii_lowercase();
        let more = args.len() - i - 1;
        match name.as_slice() {
            b"get" if more >= 2 => {
                let field = field_type(&args[i + 1])?;
                ops.push(Op::Get(field, field_offset(&args[i + 2], field)?));
                i += 3;
            }
            b"set" | b"incrby" if more >= 3 => {
                if read_only {
                    return Err("ERR BITFIELD_RO only supports the GET subcommand".into());
                }
                let field = field_type(&args[i + 1])?;
                let offset = field_offset(&args[i + 2], field)?;
                let value = int_arg(&args[i + 3])?;
                ops.push(if name == b"set" {
                    Op::Set(field, offset, value, overflow)
                } else {
                    Op::Incr(field, offset, value, overflow)
                });
                i += 4;
            }
            b"overflow" if more >= 1 => {
                overflow = match args[i + 1].to_ascii_lowercase().as_slice() {
                    b"wrap" => Overflow::Wrap,
                    b"sat" => Overflow::Sat,
                    b"fail" => Overflow::Fail,
                    _ => return Err("ERR Invalid OVERFLOW type specified".into()),
                };
                i += 2;
            }
            b"set" | b"incrby" if read_only => {
                return Err("ERR BITFIELD_RO only supports the GET subcommand".into())
            }
            _ => return Err(text::SYNTAX.into()),
        }
    }
    Ok(ops)
}

fn bitfield_generic(ctx: &mut Ctx, args: &[Bytes], read_only: bool) -> Outcome {
    let ops = parse_ops(args, read_only)?;
    let writes = ops.iter().any(|op| !matches!(op, Op::Get(..)));
    let current = ctx.string(&args[1])?.cloned();
    let mut bytes = current
        .as_ref()
        .map(|value| value.to_vec())
        .unwrap_or_default();
    let mut replies: Vec<Option<i64>> = Vec::new();
    let mut changed = false;
    // Redis tells of a BITFIELD when a SET or INCRBY applied, not of growth alone.
    let mut applied = false;
    for op in &ops {
        match *op {
            Op::Get(field, offset) => replies.push(Some(read_field(&bytes, offset, field))),
            Op::Set(field, offset, value, overflow) => {
                let old = read_field(&bytes, offset, field);
                match fit(i128::from(value), field, overflow) {
                    Some(new) => {
                        write_field(&mut bytes, offset, field, new);
                        changed = true;
                        applied = true;
                        replies.push(Some(old));
                    }
                    None => replies.push(None),
                }
            }
            Op::Incr(field, offset, by, overflow) => {
                let old = read_field(&bytes, offset, field);
                match fit(i128::from(old) + i128::from(by), field, overflow) {
                    Some(new) => {
                        write_field(&mut bytes, offset, field, new);
                        changed = true;
                        applied = true;
                        replies.push(Some(new));
                    }
                    None => replies.push(None),
                }
            }
        }
    }
    if writes {
        // As Redis, a write grows the string to the highest field written, even if refused.
        let highest = ops
            .iter()
            .filter_map(|op| match op {
                Op::Set(field, offset, ..) | Op::Incr(field, offset, ..) => {
                    Some((offset + u64::from(field.bits)).div_ceil(8) as usize)
                }
                Op::Get(..) => None,
            })
            .max()
            .unwrap_or(0);
        if bytes.len() < highest {
            bytes.resize(highest, 0);
            changed = true;
        }
        if changed {
            store_bytes(ctx, &args[1], bytes);
        }
    }
    ctx.out.array_header(replies.len());
    for reply in replies {
        match reply {
            Some(value) => ctx.out.int(value),
            None => ctx.out.null(),
        }
    }
    if applied {
        ctx.notify(notify::STRING, "setbit", &args[1]);
    }
    Ok(())
}

pub fn bitfield(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bitfield_generic(ctx, args, false)
}

pub fn bitfield_ro(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    bitfield_generic(ctx, args, true)
}
