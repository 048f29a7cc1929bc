//! What the fuzz targets in `fuzz/` run, one function per target, so that `cargo fuzz` and the
//! bounded proptest run of the test suite check the same thing (docs/fuzzing.md). Each takes
//! arbitrary bytes from a peer nobody trusts and panics only on a broken promise: every input
//! must end in whole replies or a closed connection (the store), values or a clean error (IPC
//! frames), a request or a clean refusal (the control socket). Time and memory are bounded by
//! the harness (libFuzzer's `-timeout` and `-rss_limit_mb`; a watchdog in the proptests). Not
//! part of the API.

use serde_json::Value;

use crate::control::protocol::Request;
use crate::ipc::frame::{self, Dialect, FromWorker, ToWorker};
use crate::ipc::line::{Decoder, FrameError};

/// The store: `data[0]` picks the size of the reads the rest arrives in.
pub fn store_requests(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let served = crate::state::fuzzing::serve_bytes(input, usize::from(chunk % 64) + 1);
    // The replies are whole frames, RESP2 or (after `HELLO 3`) RESP3. (Not one per request:
    // `CLIENT REPLY OFF` silences them.)
    let mut rest = &served.replies[..];
    while !rest.is_empty() {
        let resp2 = redis_protocol::resp2::decode::decode_range(rest)
            .ok()
            .flatten();
        let len = match resp2 {
            Some((_, len)) => len,
            None => match redis_protocol::resp3::decode::complete::decode_range(rest) {
                Ok(Some((_, len))) => len,
                other => panic!(
                    "not a whole RESP2 or RESP3 reply ({other:?}) after {} requests: {}",
                    served.requests,
                    rest.escape_ascii()
                ),
            },
        };
        rest = &rest[len..];
    }
}

/// IPC frames: `data[0]` picks the read size and the dialect (Node's or ours); the rest is read
/// as a worker's frames (as the primary does) and as the primary's (as a worker does). A frame
/// read is the same once written back and read again.
pub fn ipc_frames(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let dialect = if mode & 1 == 1 {
        Dialect::Node
    } else {
        Dialect::Herdsman
    };
    let chunk = usize::from(mode >> 1) + 1;
    // A small frame limit, so that inputs reach it.
    let max_frame = 256;
    let mut decoder = Decoder::new(max_frame);
    let mut values = Vec::new();
    for piece in input.chunks(chunk) {
        match decoder.feed(piece, &mut values) {
            Ok(()) => {}
            Err(FrameError::TooLong { limit }) => {
                assert_eq!(limit, max_frame);
                return;
            }
            Err(_) => return,
        }
        for value in values.drain(..) {
            let shown = frame::shorten(&value);
            assert!(shown.chars().count() <= 201, "shortened to {shown}");
            if let Ok(frame) = FromWorker::decode(value.clone(), dialect) {
                // Node's bookkeeping is never written; nor, in Node's dialect, a `to`.
                if let Ok(line) = frame.encode(dialect) {
                    let again = reread(&line, |value| FromWorker::decode(value, dialect));
                    assert_eq!(again, frame, "{}", line.escape_ascii());
                }
            }
            if let Ok(frame) = ToWorker::decode(value, dialect) {
                let line = frame.encode(dialect);
                let again = reread(&line, |value| ToWorker::decode(value, dialect));
                assert_eq!(again, frame, "{}", line.escape_ascii());
            }
        }
    }
}

/// The one frame `line` holds, read back; it must be a line of one value that decodes.
fn reread<F>(line: &[u8], decode: impl FnOnce(Value) -> Result<F, FrameError>) -> F {
    let mut values = Vec::new();
    Decoder::default()
        .feed(line, &mut values)
        .unwrap_or_else(|error| panic!("{} does not read back: {error}", line.escape_ascii()));
    assert_eq!(values.len(), 1, "{}", line.escape_ascii());
    let value = values.pop().unwrap_or_default();
    decode(value).unwrap_or_else(|error| panic!("{} does not decode: {error}", line.escape_ascii()))
}

/// A control request line: parsed, or refused; a request parsed is the same once written back
/// and parsed again (numbers included: serde_json's `float_roundtrip` parses them correctly
/// rounded, so that `data` relayed to workers keeps every bit).
pub fn control_request(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let line = serde_json::to_vec(&request).expect("a request serializes");
    let again: Request = serde_json::from_slice(&line)
        .unwrap_or_else(|error| panic!("{} does not parse back: {error}", line.escape_ascii()));
    assert_eq!(again, request);
    // As the control server reads it: one line of text.
    let _ = std::str::from_utf8(data).map(serde_json::from_str::<Value>);
}

#[cfg(test)]
mod tests {
    //! A short bounded pass over arbitrary bytes for each target, on every test run; the long
    //! runs are `cargo fuzz` (docs/fuzzing.md).

    use std::sync::mpsc;
    use std::time::Duration;

    use proptest::prelude::*;

    /// Runs `body` on its own thread; a case that takes longer than this aborts the test binary
    /// (an endless loop must fail the run, not hang it or grow it until the machine swaps).
    fn within_deadline(what: &'static str, body: impl FnOnce() + Send + 'static) {
        let (done, finished) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            body();
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => worker.join().unwrap(),
            // The body panicked: report its panic.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(panic) = worker.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("{what}: one input ran for over 10 s; aborting");
                std::process::abort();
            }
        }
    }

    /// Bytes that look like the protocol more often than uniform bytes would.
    fn store_bytes() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            any::<u8>().prop_map(|byte| vec![byte]),
            Just(b"\r\n".to_vec()),
            Just(b"\x00".to_vec()),
            Just(b"*2\r\n".to_vec()),
            Just(b"$3\r\n".to_vec()),
            Just(b"SET k v\r\n".to_vec()),
            Just(b"\"a\\x4".to_vec()),
            Just(b"'".to_vec()),
            Just(b" ".to_vec()),
        ];
        proptest::collection::vec(token, 0..64).prop_map(|tokens| tokens.concat())
    }

    /// What `cargo fuzz run control_request` found in its first run (docs/fuzzing.md):
    /// serde_json's default float parsing read `1.004e34` one ulp low.
    #[test]
    fn numbers_in_requests_survive_a_round_trip_exactly() {
        for number in [
            "10040000000000000000000000000000001",
            "1.004e34",
            "0.1",
            "-2.5e-300",
        ] {
            let line = format!(r#"{{"command":"send","to":"all","data":{{"n":{number}}}}}"#);
            super::control_request(line.as_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn store_requests_end_in_replies_or_a_close(data in store_bytes()) {
            within_deadline("store_requests", move || super::store_requests(&data));
        }

        #[test]
        fn store_requests_of_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            within_deadline("store_requests", move || super::store_requests(&data));
        }

        #[test]
        fn ipc_frames_end_in_values_or_an_error(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            within_deadline("ipc_frames", move || super::ipc_frames(&data));
        }

        #[test]
        fn control_requests_parse_or_are_refused(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            within_deadline("control_request", move || super::control_request(&data));
        }

        #[test]
        fn control_requests_that_look_like_json(
            command in prop_oneof![Just("status"), Just("reload"), Just("restart"), Just("scale"),
                                    Just("stop"), Just("send"), Just("logs"), Just("x")],
            fields in proptest::collection::vec(("[a-z]{1,8}", "[0-9]{1,3}|\"[a-z0-9+-]{0,4}\"|true|null|\\{\\}|\\{\"add\":[0-9]\\}"), 0..4),
        ) {
            let mut line = format!("{{\"command\":\"{command}\"");
            for (name, value) in fields {
                line.push_str(&format!(",\"{name}\":{value}"));
            }
            line.push('}');
            within_deadline("control_request", move || super::control_request(line.as_bytes()));
        }
    }
}
