//! One client connection: read requests, run them, write the replies, and deliver published
//! messages to a subscriber. Each batch of requests that arrived together runs under one borrow
//! of the store and is answered with one write.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::blocking::OnTimeout;
use super::clients::{ClientInfo, Peer};
use super::commands::{self, pubsub_forget};
use super::reply::Out;
use super::request::RequestParser;
use super::store::{Client, ReplyMode, Store};

/// How much a connection may hold of requests not yet complete, at most, and how many
/// connections there may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk: usize,
    pub max_pending: usize,
    /// Clients at once; one more is refused at accept (`server`).
    pub max_clients: usize,
}

/// Serves one connection until it closes. `early` is what the busy-script loop gave a
/// connection it accepted (see `Store::adopt_client`).
pub async fn serve<R, W>(
    mut reader: R,
    mut writer: W,
    store: Rc<RefCell<Store>>,
    limits: Limits,
    peer: Peer,
    early: Option<Rc<ClientInfo>>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client = {
        let mut store = store.borrow_mut();
        let client = match early {
            Some(early) => store.adopt_client(peer, &early),
            None => store.new_client(peer),
        };
        store.register(&client);
        store.stats.connections_received += 1;
        client
    };
    let mailbox = client.mailbox.clone();
    let mut parser = RequestParser::new(limits.max_bulk);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = Out::default();
    loop {
        let deadline = client.blocked.as_ref().and_then(|blocked| blocked.deadline);
        tokio::select! {
            read = reader.read_buf(&mut input) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                if client.blocked.is_none() {
                    // Messages published before these requests ran come before their replies.
                    mailbox.drain_into(&mut out.buf);
                    let mut store = store.borrow_mut();
                    run_pending(&mut store, &mut client, &mut out, &mut parser, &mut input, limits);
                } else if input.len() > limits.max_pending {
                    break;
                }
            }
            () = mailbox.notify.notified() => {
                if client.blocked.is_some() {
                    let mut store = store.borrow_mut();
                    match mailbox.unblock.take() {
                        Some(error) => end_block(&mut store, &mut client, &mut out, error),
                        None => retry_blocked(&mut store, &mut client, &mut out),
                    }
                    if client.blocked.is_none() {
                        run_pending(&mut store, &mut client, &mut out, &mut parser, &mut input, limits);
                    }
                }
            }
            () = sleep_until(deadline) => {
                let mut store = store.borrow_mut();
                end_block(&mut store, &mut client, &mut out, false);
                run_pending(&mut store, &mut client, &mut out, &mut parser, &mut input, limits);
            }
        }
        if mailbox.overflowed() || mailbox.killed.get() {
            break;
        }
        mailbox.drain_into(&mut out.buf);
        if !out.buf.is_empty() {
            if writer.write_all(&out.buf).await.is_err() {
                break;
            }
            out.buf.clear();
        }
        if client.close_after_reply {
            break;
        }
    }
    let _ = writer.shutdown().await;
    let mut store = store.borrow_mut();
    release(&mut store, &client);
    pubsub_forget(&mut store, &mut client);
    store.unregister(&mut client);
}

/// Waits until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs the complete requests in `input` until it runs out or a command blocks.
fn run_pending(
    store: &mut Store,
    client: &mut Client,
    out: &mut Out,
    parser: &mut RequestParser,
    input: &mut BytesMut,
    limits: Limits,
) {
    while client.blocked.is_none() {
        match parser.next(input) {
            Ok(Some(args)) => {
                run_one(store, client, out, args);
                if client.close_after_reply {
                    break;
                }
            }
            Ok(None) => {
                if parser.pending_bytes() + input.len() > limits.max_pending {
                    out.error(&format!(
                        "ERR Protocol error: request larger than {} bytes",
                        limits.max_pending
                    ));
                    client.close_after_reply = true;
                }
                break;
            }
            Err(error) => {
                out.error(&format!("ERR Protocol error: {}", error.0));
                client.close_after_reply = true;
                break;
            }
        }
    }
    // Logged before it is acknowledged: a reply means the write reached the file.
    store.flush_log();
}

/// Runs one request, honouring `CLIENT REPLY`.
fn run_one(store: &mut Store, client: &mut Client, out: &mut Out, args: &[bytes::Bytes]) {
    // Pub/sub confirmations are pushed even when replies are off, as in Redis (published
    // messages never pass through here).
    let mark = if is_subscription(&args[0]) {
        usize::MAX
    } else {
        out.buf.len()
    };
    commands::dispatch(store, client, out, args);
    let mark = mark.min(out.buf.len());
    // CLIENT REPLY OFF / SKIP: the reply is dropped.
    match client.reply {
        ReplyMode::On => {}
        ReplyMode::Off => out.buf.truncate(mark),
        ReplyMode::SkipNext => {
            out.buf.truncate(mark);
            client.reply = ReplyMode::Skip;
        }
        ReplyMode::Skip => {
            out.buf.truncate(mark);
            client.reply = ReplyMode::On;
        }
    }
}

/// Runs a blocked command again after a wake-up; it either serves or stays blocked.
fn retry_blocked(store: &mut Store, client: &mut Client, out: &mut Out) {
    let Some(blocked) = client.blocked.take() else {
        return;
    };
    client.retrying = true;
    run_one(store, client, out, &blocked.args);
    client.retrying = false;
    match &mut client.blocked {
        // Still blocked: the timeout still counts from the first time, as in Redis.
        Some(again) => again.deadline = blocked.deadline,
        None => release(store, client),
    }
    store.flush_log();
}

/// The client is no longer blocked: the next waiter on a key that is ready is woken.
fn release(store: &mut Store, client: &Client) {
    let keys = store.waiting.release(client.id);
    let mut ready = Vec::new();
    for (db, key) in keys {
        if db == client.db {
            ready.push(key);
        }
    }
    if !ready.is_empty() {
        store.select(client.db);
        commands::wake_ready(store, client.db, &ready);
    }
}

/// Ends a block: the timeout's reply (the null array, or `WAIT`'s count), or
/// `CLIENT UNBLOCK … ERROR`'s error.
fn end_block(store: &mut Store, client: &mut Client, out: &mut Out, error: bool) {
    let Some(blocked) = client.blocked.take() else {
        return;
    };
    release(store, client);
    if error {
        out.error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
    } else {
        match blocked.on_timeout {
            OnTimeout::NullArray => out.null_array(),
            OnTimeout::Integer(value) => out.int(value),
        }
    }
}

/// (P)SUBSCRIBE and (P)UNSUBSCRIBE, whose confirmations CLIENT REPLY does not silence.
fn is_subscription(name: &[u8]) -> bool {
    [
        &b"subscribe"[..],
        b"unsubscribe",
        b"psubscribe",
        b"punsubscribe",
    ]
    .iter()
    .any(|command| name.eq_ignore_ascii_case(command))
}
