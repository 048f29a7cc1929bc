//! The store's side of the fuzz targets (`fuzz/`) and of their bounded run in the test suite
//! (`crate::fuzzing`): bytes off the wire go through a connection's request parser and the
//! command table as in `connection`, without a socket or a runtime. Not part of the API.

use bytes::BytesMut;

use super::commands;
use super::reply::Out;
use super::request::{RequestParser, MAX_BULK};
use super::store::Store;

/// The store's memory bound in a fuzzed run, so that writes stay small.
const MAX_MEMORY: usize = 4 * 1024 * 1024;

/// What a client that sent `input` got back.
#[derive(Debug, Default)]
pub struct Served {
    /// Every reply, as written to the socket.
    pub replies: Vec<u8>,
    /// Requests run.
    pub requests: usize,
    /// The connection was closed by the store (protocol error, `QUIT`).
    pub closed: bool,
}

/// Feeds `input` to a fresh store's connection in reads of `chunk` bytes (as the socket might
/// deliver it), runs every complete request, and returns what the client got.
pub fn serve_bytes(input: &[u8], chunk: usize) -> Served {
    let mut store = Store::new(Some(MAX_MEMORY));
    let mut client = store.new_client(super::clients::Peer::default());
    store.register(&client);
    let mut parser = RequestParser::new(MAX_BULK);
    let mut buf = BytesMut::new();
    let mut out = Out::default();
    let mut served = Served::default();
    'reads: for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match parser.next(&mut buf) {
                Ok(Some(args)) => {
                    commands::dispatch(&mut store, &mut client, &mut out, args);
                    served.requests += 1;
                    if client.close_after_reply {
                        served.closed = true;
                        break 'reads;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    out.error(&format!("ERR Protocol error: {}", error.0));
                    served.closed = true;
                    break 'reads;
                }
            }
        }
        // Messages published to this client (it may have subscribed) go out with the replies.
        client.mailbox.drain_into(&mut out.buf);
    }
    served.replies = out.buf.to_vec();
    served
}
