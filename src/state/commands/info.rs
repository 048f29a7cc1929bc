//! INFO (Redis 7.0's sections, with the fields clients and `redis-cli --stat` read) and CONFIG
//! (GET of what the store has; SET of Redis's encoding knobs, accepted and reported back:
//! encodings are internal here).

use std::fmt::Write as _;

use bytes::Bytes;

use super::management::REDIS_VERSION;
use super::{subcommand, Ctx, Fail, Outcome};
use crate::state::glob;
use crate::state::notify;
use crate::state::store::Store;
use crate::sys::{cpu_seconds, Usage};

/// Sections in Redis's order, and whether a plain `INFO` (or `INFO default`) includes each.
const SECTIONS: &[(&str, bool)] = &[
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("persistence", true),
    ("stats", true),
    ("replication", true),
    ("cpu", true),
    ("modules", true),
    ("commandstats", false),
    ("errorstats", true),
    ("cluster", true),
    ("keyspace", true),
];

pub fn info(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|arg| String::from_utf8_lossy(arg).to_ascii_lowercase())
        .collect();
    let has = |name: &str| wanted.iter().any(|section| section == name);
    let all = has("all") || has("everything");
    let default = wanted.is_empty() || has("default");
    let mut reply = String::new();
    for (name, in_default) in SECTIONS {
        if !(all || (default && *in_default) || has(name)) {
            continue;
        }
        if !reply.is_empty() {
            reply.push_str("\r\n");
        }
        let mut title = name.to_string();
        title[..1].make_ascii_uppercase();
        let _ = write!(reply, "# {title}\r\n");
        section(ctx.store, name, &mut reply);
    }
    ctx.out.verbatim(reply.as_bytes());
    Ok(())
}

fn section(store: &Store, name: &str, out: &mut String) {
    let uptime = store.started.elapsed().as_secs();
    let used = store.used_memory();
    let _ = match name {
        "server" => write!(
            out,
            "redis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\nherdsman_version:{}\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nprocess_supervised:no\r\ntcp_port:0\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\nexecutable:\r\nconfig_file:\r\nio_threads_active:0\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            uptime / 86_400,
        ),
        "clients" => write!(
            out,
            "connected_clients:{}\r\ncluster_connections:0\r\nmaxclients:10000\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{}\r\ntracking_clients:0\r\nclients_in_timeout_table:{}\r\n",
            store.connected_clients,
            store.waiting.len(),
            store.waiting.len()
        ),
        "memory" => write!(
            out,
            "used_memory:{used}\r\nused_memory_human:{}\r\nused_memory_peak:{used}\r\nused_memory_lua:0\r\nmaxmemory:{}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:noeviction\r\nmem_allocator:libc\r\nlazyfree_pending_objects:0\r\nnumber_of_cached_scripts:{}\r\n",
            human(used),
            store.max_memory.unwrap_or(0),
            human(store.max_memory.unwrap_or(0)),
            store.scripting.cached_scripts(),
        ),
        "persistence" => write!(
            out,
            "loading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:{}\r\naof_rewrite_in_progress:0\r\naof_rewrite_scheduled:0\r\naof_last_write_status:{}\r\n",
            u8::from(store.log.is_some()),
            if store.log_failed.is_some() { "err" } else { "ok" },
        ),
        "stats" => write!(
            out,
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:0\r\nrejected_connections:0\r\nexpired_keys:0\r\nevicted_keys:0\r\nkeyspace_hits:0\r\nkeyspace_misses:0\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\ntotal_error_replies:{}\r\n",
            store.stats.connections_received,
            store.commands_processed,
            store.pubsub.channels().count(),
            store.pubsub.pattern_count(),
            store.stats.error_replies,
        ),
        "replication" => out.write_str(
            "role:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:0\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\n",
        ),
        "cpu" => {
            let (sys, user) = cpu_seconds(Usage::Process);
            let (sys_children, user_children) = cpu_seconds(Usage::Children);
            let (sys_thread, user_thread) = cpu_seconds(Usage::Thread);
            write!(
                out,
                "used_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:{sys_children:.6}\r\nused_cpu_user_children:{user_children:.6}\r\nused_cpu_sys_main_thread:{sys_thread:.6}\r\nused_cpu_user_main_thread:{user_thread:.6}\r\n"
            )
        }
        "commandstats" => {
            let mut names: Vec<&String> = store.stats.commands.keys().collect();
            names.sort();
            for name in names {
                let stat = store.stats.commands[name];
                if stat.calls + stat.rejected + stat.failed == 0 {
                    continue;
                }
                let per_call = if stat.calls > 0 {
                    stat.usec as f64 / stat.calls as f64
                } else {
                    0.0
                };
                let _ = write!(
                    out,
                    "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                    stat.calls, stat.usec, stat.rejected, stat.failed
                );
            }
            Ok(())
        }
        "errorstats" => {
            for (code, count) in &store.stats.errors {
                let _ = write!(out, "errorstat_{code}:count={count}\r\n");
            }
            Ok(())
        }
        "cluster" => out.write_str("cluster_enabled:0\r\n"),
        "keyspace" => {
            for (index, db) in store.databases() {
                if db.len() > 0 {
                    let _ = write!(
                        out,
                        "db{index}:keys={},expires={},avg_ttl=0\r\n",
                        db.len(),
                        db.expiring()
                    );
                }
            }
            Ok(())
        }
        _ => Ok(()),
    };
}

/// Bytes as Redis's `bytesToHuman`: `1.57M`.
fn human(bytes: usize) -> String {
    let bytes = bytes as f64;
    let units = [
        ("K", 1024f64),
        ("M", 1024f64.powi(2)),
        ("G", 1024f64.powi(3)),
    ];
    for (unit, size) in units.iter().rev() {
        if bytes >= *size {
            return format!("{:.2}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// What kind of value a knob takes, for CONFIG SET's checks.
#[derive(Clone, Copy, PartialEq)]
enum Knob {
    Integer,
    YesNo,
}

/// Redis's encoding and tuning knobs with their defaults: CONFIG SET accepts them (the store's
/// encodings are its own) and CONFIG GET reports what was set.
const KNOBS: &[(&str, Knob, &str)] = &[
    ("hash-max-listpack-entries", Knob::Integer, "128"),
    ("hash-max-listpack-value", Knob::Integer, "64"),
    ("hash-max-ziplist-entries", Knob::Integer, "128"),
    ("hash-max-ziplist-value", Knob::Integer, "64"),
    ("set-max-intset-entries", Knob::Integer, "512"),
    ("zset-max-listpack-entries", Knob::Integer, "128"),
    ("zset-max-listpack-value", Knob::Integer, "64"),
    ("zset-max-ziplist-entries", Knob::Integer, "128"),
    ("zset-max-ziplist-value", Knob::Integer, "64"),
    ("list-max-listpack-size", Knob::Integer, "-2"),
    ("list-max-ziplist-size", Knob::Integer, "-2"),
    ("list-compress-depth", Knob::Integer, "0"),
    ("stream-node-max-bytes", Knob::Integer, "4096"),
    ("stream-node-max-entries", Knob::Integer, "100"),
    ("proto-max-bulk-len", Knob::Integer, "536870912"),
    ("activerehashing", Knob::YesNo, "yes"),
    ("lazyfree-lazy-user-del", Knob::YesNo, "no"),
    ("lazyfree-lazy-user-flush", Knob::YesNo, "no"),
    ("lazyfree-lazy-server-del", Knob::YesNo, "no"),
    ("lazyfree-lazy-expire", Knob::YesNo, "no"),
    // Milliseconds a script runs before other clients get BUSY (scripting's `busy.rs`).
    ("busy-reply-threshold", Knob::Integer, "5000"),
    ("lua-time-limit", Knob::Integer, "5000"),
];

/// The value of knob `name`: the name the ziplist alias shares with listpack, as in Redis.
fn alias(name: &str) -> String {
    if name == "lua-time-limit" {
        return "busy-reply-threshold".into();
    }
    name.replace("ziplist", "listpack")
}

pub fn config(ctx: &mut Ctx, args: &[Bytes]) -> Outcome {
    let known = [("get", -3), ("set", -4), ("resetstat", 2)];
    match subcommand(args, "config", &known)? {
        "get" => {
            let max_memory = ctx.store.max_memory.unwrap_or(0).to_string();
            let append_only = if ctx.store.log.is_some() { "yes" } else { "no" };
            let events = notify::format(ctx.store.notify_flags);
            let mut settings: Vec<(String, String)> = [
                ("maxmemory", max_memory.as_str()),
                ("maxmemory-policy", "noeviction"),
                ("appendonly", append_only),
                ("appendfsync", "everysec"),
                ("save", ""),
                ("databases", "16"),
                ("notify-keyspace-events", events.as_str()),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
            for (name, _, default) in KNOBS {
                let value = ctx
                    .store
                    .settings
                    .get(&alias(name))
                    .cloned()
                    .unwrap_or_else(|| default.to_string());
                settings.push((name.to_string(), value));
            }
            let found: Vec<&(String, String)> = settings
                .iter()
                .filter(|(name, _)| {
                    args[2..].iter().any(|pattern| {
                        glob::matches(&pattern.to_ascii_lowercase(), name.as_bytes())
                    })
                })
                .collect();
            ctx.out.map_of(
                found
                    .iter()
                    .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
            );
        }
        "set" => {
            if !args.len().is_multiple_of(2) {
                return Err(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    String::from_utf8_lossy(&args[2])
                )
                .into());
            }
            let mut accepted = Vec::new();
            let mut events = None;
            for pair in args[2..].chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                let value = String::from_utf8_lossy(&pair[1]).into_owned();
                if name == "notify-keyspace-events" {
                    let Some(flags) = notify::parse(&pair[1]) else {
                        return Err(format!(
                            "ERR CONFIG SET failed (possibly related to argument '{name}') - {}",
                            notify::INVALID_CLASS
                        )
                        .into());
                    };
                    events = Some(flags);
                    continue;
                }
                let Some((_, kind, _)) = KNOBS.iter().find(|(knob, _, _)| *knob == name) else {
                    return Err(refused(&name));
                };
                let valid = match kind {
                    Knob::Integer => crate::state::number::parse_i64(value.as_bytes()).is_some(),
                    Knob::YesNo => matches!(value.to_ascii_lowercase().as_str(), "yes" | "no"),
                };
                if !valid {
                    let why = match kind {
                        Knob::Integer => "argument couldn't be parsed into an integer",
                        Knob::YesNo => "argument must be 'yes' or 'no'",
                    };
                    return Err(format!(
                        "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
                    )
                    .into());
                }
                accepted.push((alias(&name), value.to_ascii_lowercase()));
            }
            for (name, value) in &accepted {
                if name == "busy-reply-threshold" {
                    let limit = crate::state::number::parse_i64(value.as_bytes()).unwrap_or(0);
                    ctx.store.scripting.busy.set_limit_ms(limit.max(0) as u64);
                }
            }
            ctx.store.settings.extend(accepted);
            if let Some(flags) = events {
                ctx.store.set_notify_flags(flags);
            }
            ctx.out.ok();
        }
        _ => {
            ctx.store.stats.reset();
            ctx.out.ok();
        }
    }
    Ok(())
}

/// The error for a parameter CONFIG SET does not change here.
fn refused(name: &str) -> Fail {
    let managed = [
        "maxmemory",
        "maxmemory-policy",
        "appendonly",
        "appendfsync",
        "save",
        "databases",
    ];
    if managed.contains(&name) {
        // Redis's shape for a refused value, so clients and tests recognise it.
        format!("ERR CONFIG SET failed (possibly related to argument '{name}') - herdsman's flags set it (--state-max-memory, --state-file), not CONFIG SET").into()
    } else {
        format!("ERR Unknown option or number of arguments for CONFIG SET - '{name}'").into()
    }
}
