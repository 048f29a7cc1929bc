//! `/api/events`: the cluster's life as server-sent events, until the client goes or the
//! primary stops. Two kinds of event on one stream:
//!
//! - the primary's own log lines, as unnamed events (`data:` only, the browser's `message`),
//!   one JSON object each as `herdsman logs --json` prints it;
//! - the lifecycle, typed: `event: worker` (spawned, ready, exited with its code or signal and
//!   why), `event: reload` (started, completed, aborted; a restart names its slot) and
//!   `event: scale`, each with a JSON `data:` line, from the lifecycle machine's own events.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::http::ReplyBody;
use super::Shared;
use crate::control::protocol::LogLine;
use crate::domain::{LifecycleEvent, ReloadChange, WorkerChange};

/// Events waiting for a slow client before the task waits for it in turn.
const CLIENT_QUEUE: usize = 16;

/// The events stream: log lines and lifecycle events, in the order they happen.
pub fn follow(shared: &Shared, shutdown: CancellationToken) -> Response<ReplyBody> {
    let mut lines = shared.hub.subscribe();
    let mut lifecycle = shared.lifecycle.subscribe();
    let (sender, receiver) = mpsc::channel::<Bytes>(CLIENT_QUEUE);
    tokio::spawn(async move {
        if sender
            .send(Bytes::from_static(b": herdsman\n\n"))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = sender.closed() => return,
                event = lifecycle.recv() => match event {
                    Ok(event) => Some(typed(&event, SystemTime::now())),
                    Err(RecvError::Lagged(missed)) => Some(format!(": {missed} lifecycle events missed\n\n")),
                    Err(RecvError::Closed) => return,
                },
                entry = lines.recv() => match entry {
                    Ok((_, entry)) if entry.stream == "herdsman" => {
                        let line = serde_json::to_string(&LogLine::from(&entry)).unwrap_or_default();
                        Some(format!("data: {line}\n\n"))
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => return,
                },
            };
            let Some(event) = event else { continue };
            if sender.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody(receiver).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// One lifecycle event as SSE: its name and its JSON (docs/operations.md lists the fields).
fn typed(event: &LifecycleEvent, time: SystemTime) -> String {
    let (name, data) = lifecycle_json(event, time);
    format!("event: {name}\ndata: {data}\n\n")
}

fn lifecycle_json(event: &LifecycleEvent, time: SystemTime) -> (&'static str, Value) {
    let time = humantime::format_rfc3339_millis(time).to_string();
    match event {
        LifecycleEvent::Worker {
            slot,
            pid,
            generation,
            change,
        } => {
            let mut data = json!({
                "time": time, "slot": slot, "pid": pid, "generation": generation,
            });
            let name = match change {
                WorkerChange::Spawned => "spawned",
                WorkerChange::Ready => "ready",
                WorkerChange::Exited {
                    code,
                    signal,
                    reason,
                    description,
                } => {
                    data["code"] = json!(code);
                    data["signal"] = json!(signal);
                    data["reason"] = json!(reason);
                    data["description"] = json!(description);
                    "exited"
                }
            };
            data["change"] = json!(name);
            ("worker", data)
        }
        LifecycleEvent::Reload {
            slot,
            generation,
            change,
            message,
        } => {
            let change = match change {
                ReloadChange::Started => "started",
                ReloadChange::Completed => "completed",
                ReloadChange::Aborted => "aborted",
            };
            let data = json!({
                "time": time, "change": change, "slot": slot, "generation": generation,
                "message": message,
            });
            ("reload", data)
        }
        LifecycleEvent::Scale { from, to } => {
            ("scale", json!({ "time": time, "from": from, "to": to }))
        }
    }
}

/// A body fed by a channel, ending when the sender goes.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(context)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lifecycle_events_are_named_and_typed() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(2);
        let exited = LifecycleEvent::Worker {
            slot: 1,
            pid: 42,
            generation: 3,
            change: WorkerChange::Exited {
                code: None,
                signal: Some(9),
                reason: "died",
                description: "was killed by SIGKILL".into(),
            },
        };
        let (name, data) = lifecycle_json(&exited, time);
        assert_eq!(name, "worker");
        assert_eq!(
            data.to_string(),
            "{\"change\":\"exited\",\"code\":null,\"description\":\"was killed by SIGKILL\",\
             \"generation\":3,\"pid\":42,\"reason\":\"died\",\"signal\":9,\"slot\":1,\
             \"time\":\"1970-01-01T00:00:00.002Z\"}"
        );
        let aborted = LifecycleEvent::Reload {
            slot: Some(2),
            generation: 4,
            change: ReloadChange::Aborted,
            message: "restart aborted: …".into(),
        };
        assert_eq!(
            typed(&aborted, time),
            "event: reload\ndata: {\"change\":\"aborted\",\"generation\":4,\
             \"message\":\"restart aborted: …\",\"slot\":2,\"time\":\"1970-01-01T00:00:00.002Z\"}\n\n"
        );
        let scaled = LifecycleEvent::Scale { from: 2, to: 4 };
        assert_eq!(
            lifecycle_json(&scaled, time).1.to_string(),
            "{\"from\":2,\"time\":\"1970-01-01T00:00:00.002Z\",\"to\":4}"
        );
    }
}
