//! One client connection: read requests, run them, write the replies, and deliver published
//! messages to a subscriber. Each batch of requests that arrived together runs under one borrow
//! of the store and is answered with one write.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::clients::Peer;
use super::commands::{self, pubsub_forget};
use super::reply::Out;
use super::request::RequestParser;
use super::store::{ReplyMode, Store};

/// How much a connection may hold of requests not yet complete, at most, and how many
/// connections there may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bulk: usize,
    pub max_pending: usize,
    /// Clients at once; one more is refused at accept (`server`).
    pub max_clients: usize,
}

pub async fn serve<R, W>(
    mut reader: R,
    mut writer: W,
    store: Rc<RefCell<Store>>,
    limits: Limits,
    peer: Peer,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client = {
        let mut store = store.borrow_mut();
        let client = store.new_client(peer);
        store.register(&client);
        store.stats.connections_received += 1;
        client
    };
    let mailbox = client.mailbox.clone();
    let mut parser = RequestParser::new(limits.max_bulk);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = Out::default();
    loop {
        tokio::select! {
            read = reader.read_buf(&mut input) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break;
                }
                let mut store = store.borrow_mut();
                loop {
                    match parser.next(&mut input) {
                        Ok(Some(args)) => {
                            // Pub/sub confirmations are pushed even when replies are off, as
                            // in Redis (published messages never pass through here).
                            let mark = if is_subscription(&args[0]) {
                                usize::MAX
                            } else {
                                out.buf.len()
                            };
                            commands::dispatch(&mut store, &mut client, &mut out, args);
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
            () = mailbox.notify.notified() => {}
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
    pubsub_forget(&mut store, &mut client);
    store.unregister(&mut client);
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
