//! One client connection through the proxy: a worker for it, then HTTP/1.x request by request,
//! or plain bytes.
//!
//! The upstream connection is made when the client connects (least-connections counts it from
//! then on, and a server that speaks first, like SMTP or MySQL, is relayed as bytes; one that
//! closes before any byte either way, a worker just killed, is replaced by another). When the
//! client's first bytes are an HTTP/1.x request head, each request is sent on, its bytes kept
//! (idempotent requests, up to [`MAX_REPLAY`]) until the first byte of the response: if the
//! worker closes the connection before that byte (the keep-alive race of a draining server,
//! a worker killed), the request is sent once more on a new connection to another worker. The
//! client's connection outlives the worker's: the next request after an upstream close goes
//! on a new upstream connection, so a reload never closes a client's keep-alive connection; the
//! next request after its worker stopped getting new ones (a reload retires it) goes to another
//! worker as well, so the retiring worker is left only its requests in flight.
//!
//! Every upstream connection, the first and each one after (a retry, a reconnect), is picked
//! for the client's address (`--sticky ip`) and starts with the PROXY protocol header when
//! `--proxy-protocol` asks for one, before any of the client's bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::framing::{parse_request, parse_response, Body, Parsed, RequestHead};
use super::header;
use super::relay::{read_more, read_some, relay, IDLE_TIMEOUT};
use super::Shared;

/// A request body kept for a second try, at most.
pub const MAX_REPLAY: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new connection waits for a serving worker when none is (all restarting).
const NO_WORKER_WAIT: Duration = Duration::from_secs(5);
const NO_WORKER_POLL: Duration = Duration::from_millis(20);
/// How many times a new connection moves on when its worker closes before any byte.
const MAX_RECONNECTS: usize = 2;
const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// A connection to a worker, counted open in the balancer while it lives.
struct Upstream {
    stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.release(self.id);
    }
}

/// The two ends of the client's connection, as the PROXY protocol header names them.
#[derive(Clone, Copy, Debug)]
struct Ends {
    /// The client's address, `None` if the socket could not tell it.
    client: Option<SocketAddr>,
    /// The cluster's address the client reached.
    local: Option<SocketAddr>,
}

impl Ends {
    fn of(client: &TcpStream) -> Ends {
        Ends {
            client: client.peer_addr().ok(),
            local: client.local_addr().ok(),
        }
    }
}

/// Connects to a serving worker, other than `avoid` if there is another; a worker that does
/// not accept (killed, not yet taken off the list) is passed over. The header, if any, is
/// written first.
async fn connect(shared: &Arc<Shared>, ends: Ends, avoid: Option<u64>) -> Option<Upstream> {
    let deadline = Instant::now() + NO_WORKER_WAIT;
    let mut failed: Vec<u64> = Vec::new();
    let client = ends.client.map(|address| address.ip());
    let header = match (ends.client, ends.local) {
        (Some(client), Some(local)) => header::encode(shared.header, client, local),
        _ => Vec::new(),
    };
    loop {
        let mut except = failed.clone();
        except.extend(avoid);
        let picked = shared
            .pick(&except, client)
            .or_else(|| shared.pick(&failed, client));
        let Some(picked) = picked else {
            if Instant::now() >= deadline {
                return None;
            }
            // Maybe the list changes: a dead worker goes, a new one comes.
            failed.clear();
            tokio::time::sleep(NO_WORKER_POLL).await;
            continue;
        };
        let upstream = |stream| Upstream {
            stream,
            id: picked.id,
            shared: shared.clone(),
        };
        if let Ok(Ok(mut stream)) =
            timeout(CONNECT_TIMEOUT, TcpStream::connect(picked.address)).await
        {
            if header.is_empty() || stream.write_all(&header).await.is_ok() {
                let _ = stream.set_nodelay(true);
                return Some(upstream(stream));
            }
        }
        shared.release(picked.id);
        failed.push(picked.id);
    }
}

/// Whether a kept upstream connection was closed by its worker (or sent what nobody asked).
/// Nothing came since the last read cleared its readiness (`relay::read_into`): then it is
/// alive, known without a system call.
fn is_stale(stream: &TcpStream) -> bool {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    if stream.poll_read_ready(&mut context).is_pending() {
        return false;
    }
    let mut byte = [0];
    !matches!(stream.try_read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

pub async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let ends = Ends::of(&client);
    // Before the first upstream is picked, so that a change of the list after it is seen.
    let routes = shared.routes.subscribe();
    let Some(mut upstream) = connect(&shared, ends, None).await else {
        return;
    };
    let mut pending = Vec::with_capacity(4096);
    let mut reconnects = 0;
    loop {
        tokio::select! {
            read = read_more(&client, &mut pending) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => match parse_request(&pending) {
                    Parsed::Partial => continue,
                    Parsed::NotHttp => break,
                    Parsed::Head(_) => {
                        let exchange = Exchange { client, ends, upstream: Some(upstream), pending, shared, routes };
                        return exchange.run().await;
                    }
                },
            },
            _ = upstream.stream.readable() => {
                let mut byte = [0];
                match upstream.stream.peek(&mut byte).await {
                    // The server speaks first: not HTTP.
                    Ok(read) if read > 0 => break,
                    // Closed before a byte either way (a worker killed): another worker.
                    _ if reconnects < MAX_RECONNECTS => {
                        reconnects += 1;
                        let failed = upstream.id;
                        drop(upstream);
                        upstream = match connect(&shared, ends, Some(failed)).await {
                            Some(upstream) => upstream,
                            None => return,
                        };
                    }
                    _ => return,
                }
            }
            _ = tokio::time::sleep(IDLE_TIMEOUT) => return,
        }
    }
    relay(&client, &upstream.stream, &pending).await;
}

/// What follows one request and its response.
enum After {
    Next,
    Close,
    /// The rest of the connection is bytes (`101 Switching Protocols`, or not HTTP any more).
    Tunnel,
}

struct Exchange {
    client: TcpStream,
    ends: Ends,
    upstream: Option<Upstream>,
    /// Bytes from the client not sent on yet: the next request's start.
    pending: Vec<u8>,
    /// Changes when the proxy's list of workers does (`Shared::routes`).
    routes: tokio::sync::watch::Receiver<u64>,
    shared: Arc<Shared>,
}

impl Exchange {
    async fn run(mut self) {
        loop {
            let after = match self.next_request().await {
                Some(Parsed::Head(head)) => self.exchange(head).await,
                Some(_) => After::Tunnel,
                None => After::Close,
            };
            match after {
                After::Next => continue,
                After::Close => return,
                After::Tunnel => return self.tunnel().await,
            }
        }
    }

    /// Reads until `pending` starts with a whole request head; `None` when the client closed
    /// or idled first.
    async fn next_request(&mut self) -> Option<Parsed<RequestHead>> {
        loop {
            match parse_request(&self.pending) {
                Parsed::Partial => {}
                parsed => return Some(parsed),
            }
            let read = tokio::select! {
                read = timeout(IDLE_TIMEOUT, read_more(&self.client, &mut self.pending)) => read,
                // Between requests a kept upstream whose worker left the list goes at once: a
                // retiring worker is left nothing of an idle client's.
                Ok(()) = self.routes.changed(), if self.upstream.is_some() => {
                    self.let_go_if_unrouted();
                    continue;
                }
            };
            match read {
                Ok(Ok(read)) if read > 0 => {}
                _ => return None,
            }
        }
    }

    async fn tunnel(mut self) {
        let upstream = match self.upstream.take() {
            Some(upstream) => upstream,
            // Not HTTP: the connection counts as one request (`--max-requests`).
            None => match connect(&self.shared, self.ends, None).await {
                Some(upstream) => {
                    self.shared.count_served(upstream.id);
                    upstream
                }
                None => return,
            },
        };
        relay(&self.client, &upstream.stream, &self.pending).await;
    }

    /// An upstream connection for the next request: the kept one if its worker has not closed
    /// it and still gets requests, else a new one. So a retiring worker's keep-alive clients
    /// move on at their next request, and it is left with its requests in flight to finish.
    async fn upstream(&mut self, avoid: Option<u64>) -> Option<&mut Upstream> {
        // The list changed since this connection last looked (an atomic load when it did not).
        if self.routes.has_changed().unwrap_or(false) {
            self.routes.mark_unchanged();
            self.let_go_if_unrouted();
        }
        if self
            .upstream
            .as_ref()
            .is_some_and(|upstream| is_stale(&upstream.stream))
        {
            self.upstream = None;
        }
        if self.upstream.is_none() {
            self.upstream = connect(&self.shared, self.ends, avoid).await;
        }
        self.upstream.as_mut()
    }

    /// Drops the kept upstream if its worker no longer gets requests.
    fn let_go_if_unrouted(&mut self) {
        let shared = &self.shared;
        if self
            .upstream
            .as_ref()
            .is_some_and(|upstream| !shared.is_routed(upstream.id))
        {
            self.upstream = None;
        }
    }

    /// Sends one request on and its response back.
    async fn exchange(&mut self, head: RequestHead) -> After {
        let mut body = head.body.clone();
        let mut request: Vec<u8> = self.pending.drain(..head.length).collect();
        let Ok(used) = body.consume(&self.pending) else {
            return After::Close;
        };
        request.extend(self.pending.drain(..used));
        let mut replay = head.idempotent.then(|| request.clone());
        let mut retried = false;
        let mut sent = self.send(&request, None).await;
        // The response's head so far, then how its body ends.
        let mut response_head = Vec::new();
        let mut response_body: Option<(Body, bool)> = None;
        // The final response's head, not written yet.
        let mut unsent = Vec::new();
        let mut answered = false;
        loop {
            let read = if !sent {
                None
            } else {
                let Some(upstream) = self.upstream.as_mut() else {
                    return After::Close;
                };
                // Buffers are made when bytes come (`read_some`), not held while waiting.
                tokio::select! {
                    read = read_some(&self.client), if !body.is_done() => {
                        let client_bytes = match read {
                            Ok(Some(bytes)) if !bytes.is_empty() => bytes,
                            Ok(None) => continue,
                            Ok(Some(_)) | Err(_) => return After::Close,
                        };
                        let Ok(used) = body.consume(&client_bytes) else {
                            return After::Close;
                        };
                        self.pending.extend_from_slice(&client_bytes[used..]);
                        let part = &client_bytes[..used];
                        replay = replay.filter(|kept| kept.len() + used <= MAX_REPLAY).map(|mut kept| {
                            kept.extend_from_slice(part);
                            kept
                        });
                        if upstream.stream.write_all(part).await.is_err() {
                            sent = false;
                        }
                        continue;
                    }
                    read = read_some(&upstream.stream) => match read {
                        Ok(Some(bytes)) if !bytes.is_empty() => Some(bytes),
                        Ok(None) => continue,
                        _ => None,
                    },
                    _ = tokio::time::sleep(IDLE_TIMEOUT) => return After::Close,
                }
            };
            let Some(upstream_bytes) = read else {
                // The worker closed (or could not be reached).
                if !answered {
                    if let Some(bytes) = replay.as_ref().filter(|_| !retried && body.is_done()) {
                        retried = true;
                        let failed = self.upstream.take().map(|upstream| upstream.id);
                        let bytes = bytes.clone();
                        sent = self.send(&bytes, failed).await;
                        continue;
                    }
                    let _ = self.client.write_all(BAD_GATEWAY).await;
                    return After::Close;
                }
                if matches!(response_body, Some((Body::Length(u64::MAX), _))) {
                    let _ = self.client.shutdown().await;
                }
                return After::Close;
            };
            answered = true;
            let whole_head;
            let bytes: &[u8] = if response_body.is_none() {
                response_head.extend_from_slice(&upstream_bytes);
                loop {
                    match parse_response(&response_head, head.is_head) {
                        Parsed::Partial => break,
                        Parsed::NotHttp => {
                            if self.client.write_all(&response_head).await.is_err() {
                                return After::Close;
                            }
                            return After::Tunnel;
                        }
                        Parsed::Head(response) => {
                            let rest = response_head.split_off(response.length);
                            let upgraded = response.status == 101 && head.upgrade;
                            if !upgraded && !(100..200).contains(&response.status) {
                                // The final answer's head goes with its body's first bytes,
                                // in one write.
                                unsent = std::mem::replace(&mut response_head, rest);
                                response_body = Some((response.body, response.closes));
                                break;
                            }
                            if self.client.write_all(&response_head).await.is_err() {
                                return After::Close;
                            }
                            response_head = rest;
                            if upgraded {
                                if self.client.write_all(&response_head).await.is_err() {
                                    return After::Close;
                                }
                                return After::Tunnel;
                            }
                            // 100 Continue and other interim answers: the real one follows.
                            continue;
                        }
                    }
                }
                if response_body.is_none() {
                    continue;
                }
                // What followed the head: the body's start.
                whole_head = std::mem::take(&mut response_head);
                &whole_head
            } else {
                &upstream_bytes
            };
            let Some((response, closes)) = response_body.as_mut() else {
                continue;
            };
            let Ok(used) = response.consume(bytes) else {
                return After::Close;
            };
            let out = match unsent.is_empty() {
                true => &bytes[..used],
                false => {
                    unsent.extend_from_slice(&bytes[..used]);
                    &unsent[..]
                }
            };
            if self.client.write_all(out).await.is_err() {
                return After::Close;
            }
            unsent.clear();
            if response.is_done() {
                if !body.is_done() {
                    // Answered before the request's body was all there: the worker will close.
                    return After::Close;
                }
                // Either side said this is the connection's last exchange: both ends close.
                if *closes || head.closes {
                    return After::Close;
                }
                return After::Next;
            }
        }
    }

    /// Sends the request `bytes` on the kept or a new upstream connection, counting it for
    /// its worker (`--max-requests`); false if none takes them (the caller then sees the
    /// connection closed).
    async fn send(&mut self, bytes: &[u8], avoid: Option<u64>) -> bool {
        let Some(upstream) = self.upstream(avoid).await else {
            return false;
        };
        let sent = upstream.stream.write_all(bytes).await.is_ok();
        if sent {
            upstream.shared.count_served(upstream.id);
        }
        sent
    }
}
