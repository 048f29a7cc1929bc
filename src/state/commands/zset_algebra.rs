//! ZUNION, ZINTER, ZDIFF (and their STORE forms) with WEIGHTS and AGGREGATE, and ZINTERCARD.
//! Plain sets count as sorted sets whose scores are all 1, as in Redis.

use std::collections::HashMap;

use bytes::Bytes;

use super::zset_ranges::store_result;
use super::zsets::reply_members;
use super::{int_arg, Ctx, Fail, Outcome};
use crate::state::db::{Entry, Value};
use crate::state::reply::text;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Union,
    Inter,
    Diff,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// One input: its members and scores (empty for a missing key), and its weight.
struct Source {
    items: Vec<(Bytes, f64)>,
    lookup: HashMap<Bytes, f64>,
    weight: f64,
}

fn combine(aggregate: Aggregate, target: f64, value: f64) -> f64 {
    match aggregate {
        Aggregate::Sum => {
            let sum = target + value;
            if sum.is_nan() {
                0.0
            } else {
                sum
            }
        }
        Aggregate::Min => target.min(value),
        Aggregate::Max => target.max(value),
    }
}

/// Reads the input keys (`args[0]` is numkeys) and the options after them; for ZINTERCARD
/// `cardinality` is true and LIMIT is its option.
fn sources(
    ctx: &mut Ctx,
    args: &[Bytes],
    op: Op,
    command: &str,
    store: bool,
    cardinality: bool,
) -> Result<(Vec<Source>, Aggregate, bool, usize), Fail> {
    let count = int_arg(&args[0])?;
    if count < 1 {
        return Err(format!("ERR at least 1 input key is needed for '{command}' command").into());
    }
    if count as u64 > (args.len() - 1) as u64 {
        return Err(text::SYNTAX.into());
    }
    let count = count as usize;
    let mut sources = Vec::with_capacity(count);
    for key in &args[1..=count] {
        let items: Vec<(Bytes, f64)> = match ctx.entry(key) {
            None => Vec::new(),
            Some(Entry {
                value: Value::ZSet(zset),
                ..
            }) => zset
                .iter()
                .map(|(member, score)| (member.to_bytes(), score))
                .collect(),
            Some(Entry {
                value: Value::Set(set),
                ..
            }) => set.iter().map(|member| (member.clone(), 1.0)).collect(),
            Some(_) => return Err(text::WRONG_TYPE.into()),
        };
        sources.push(Source {
            lookup: HashMap::new(),
            items,
            weight: 1.0,
        });
    }
    let (mut aggregate, mut withscores, mut limit) = (Aggregate::Sum, false, 0usize);
    let mut i = count + 1;
    while i < args.len() {
        let remaining = args.len() - i;
        let option = args[i].to_ascii_lowercase();
        if op != Op::Diff && !cardinality && remaining > count && option == b"weights" {
            for (source, weight) in sources.iter_mut().zip(&args[i + 1..]) {
                source.weight = super::zsets::parse_score(weight)
                    .ok_or(Fail::from("ERR weight value is not a float"))?;
            }
            i += count + 1;
        } else if op != Op::Diff && !cardinality && remaining >= 2 && option == b"aggregate" {
            aggregate = match args[i + 1].to_ascii_lowercase().as_slice() {
                b"sum" => Aggregate::Sum,
                b"min" => Aggregate::Min,
                b"max" => Aggregate::Max,
                _ => return Err(text::SYNTAX.into()),
            };
            i += 2;
        } else if !store && !cardinality && option == b"withscores" {
            withscores = true;
            i += 1;
        } else if cardinality && remaining >= 2 && option == b"limit" {
            limit = crate::state::number::parse_i64(&args[i + 1])
                .and_then(|value| usize::try_from(value).ok())
                .ok_or(Fail::from("ERR LIMIT can't be negative"))?;
            i += 2;
        } else {
            return Err(text::SYNTAX.into());
        }
    }
    Ok((sources, aggregate, withscores, limit))
}

/// The result of `op` over `sources`, unordered.
fn compute(mut sources: Vec<Source>, op: Op, aggregate: Aggregate) -> Vec<(Bytes, f64)> {
    let weighted = |score: f64, weight: f64| {
        let value = score * weight;
        if value.is_nan() {
            0.0
        } else {
            value
        }
    };
    match op {
        Op::Union => {
            let mut result: indexmap::IndexMap<Bytes, f64> = indexmap::IndexMap::new();
            for source in &sources {
                for (member, score) in &source.items {
                    let value = weighted(*score, source.weight);
                    match result.get_mut(member) {
                        Some(target) => *target = combine(aggregate, *target, value),
                        None => {
                            result.insert(member.clone(), value);
                        }
                    }
                }
            }
            result.into_iter().collect()
        }
        Op::Inter => {
            sources.sort_by_key(|source| source.items.len());
            for source in sources.iter_mut().skip(1) {
                source.lookup = source.items.drain(..).collect();
            }
            let (first, rest) = sources.split_first().expect("at least one key");
            first
                .items
                .iter()
                .filter_map(|(member, score)| {
                    let mut value = weighted(*score, first.weight);
                    for other in rest {
                        let score = other.lookup.get(member)?;
                        value = combine(aggregate, value, weighted(*score, other.weight));
                    }
                    Some((member.clone(), value))
                })
                .collect()
        }
        Op::Diff => {
            for source in sources.iter_mut().skip(1) {
                source.lookup = source.items.drain(..).collect();
            }
            let (first, rest) = sources.split_first().expect("at least one key");
            first
                .items
                .iter()
                .filter(|(member, _)| rest.iter().all(|other| !other.lookup.contains_key(member)))
                .cloned()
                .collect()
        }
    }
}

fn run(ctx: &mut Ctx, args: &[Bytes], op: Op, command: &str) -> Outcome {
    let (sources, aggregate, withscores, _) = sources(ctx, &args[1..], op, command, false, false)?;
    let mut result = crate::state::zset::ZSet::default();
    for (member, score) in compute(sources, op, aggregate) {
        result.insert(&member, score);
    }
    let items: Vec<(Bytes, f64)> = result
        .iter()
        .map(|(member, score)| (member.to_bytes(), score))
        .collect();
    reply_members(ctx, &items, withscores);
    Ok(())
}

fn run_store(ctx: &mut Ctx, args: &[Bytes], op: Op, command: &str) -> Outcome {
    let (sources, aggregate, _, _) = sources(ctx, &args[2..], op, command, true, false)?;
    let items = compute(sources, op, aggregate);
    store_result(ctx, &args[1], items, command);
    Ok(())
}

pub fn zunion(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    run(ctx, args, Op::Union, "zunion")
}

pub fn zinter(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    run(ctx, args, Op::Inter, "zinter")
}

pub fn zdiff(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    run(ctx, args, Op::Diff, "zdiff")
}

pub fn zunionstore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    run_store(ctx, args, Op::Union, "zunionstore")
}

pub fn zinterstore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    run_store(ctx, args, Op::Inter, "zinterstore")
}

pub fn zdiffstore(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    run_store(ctx, args, Op::Diff, "zdiffstore")
}

pub fn zintercard(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let (sources, _, _, limit) = sources(ctx, &args[1..], Op::Inter, "zintercard", false, true)?;
    let mut count = compute(sources, Op::Inter, Aggregate::Sum).len();
    if limit > 0 {
        count = count.min(limit);
    }
    ctx.out.int(count as i64);
    Ok(())
}
