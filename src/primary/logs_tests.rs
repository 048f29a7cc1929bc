//! Tests of the log pipeline (`logs.rs`): the line reader and the writer.

use super::*;

async fn lines_of(input: &[u8]) -> Vec<String> {
    let mut reader = LineReader::new(input);
    let mut lines = Vec::new();
    for _ in 0..100 {
        match reader.next_line().await {
            Some(line) => lines.push(line),
            None => return lines,
        }
    }
    panic!("reader did not end");
}

#[tokio::test]
async fn splits_lines_and_keeps_a_final_partial_line() {
    assert_eq!(lines_of(b"a\nbb\r\n\nlast").await, ["a", "bb", "", "last"]);
    assert_eq!(lines_of(b"").await, Vec::<String>::new());
}

#[tokio::test]
async fn cuts_over_long_lines() {
    let long = vec![b'x'; MAX_LINE + 10];
    let lines = lines_of(&long).await;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), MAX_LINE);
    assert_eq!(lines[1].len(), 10);
}

#[test]
fn tail_keeps_the_last_lines() {
    let tail = Tail::default();
    for index in 0..TAIL_LINES + 3 {
        tail.push(&format!("line {index}"));
    }
    let lines = tail.lines();
    assert_eq!(lines.len(), TAIL_LINES);
    assert_eq!(lines[0], "line 3");
}

#[test]
fn formats_text_and_json() {
    let formatter = Formatter {
        format: LogFormat::Text,
        colour_stdout: false,
        colour_stderr: false,
        primary_pid: 1,
    };
    let record = Record::Worker {
        time: SystemTime::UNIX_EPOCH,
        slot: 2,
        pid: 42,
        stream: Stream::Stdout,
        line: "hello".into(),
    };
    let mut out = String::new();
    assert_eq!(record.target(), Stream::Stdout);
    formatter.format(&record, &mut out);
    assert_eq!(out, "[2:42] hello\n");

    let json = Formatter {
        format: LogFormat::Json,
        ..formatter
    };
    let mut out = String::new();
    json.format(&record, &mut out);
    assert_eq!(
        out,
        "{\"time\":\"1970-01-01T00:00:00.000Z\",\"slot\":2,\"pid\":42,\"stream\":\"stdout\",\"line\":\"hello\"}\n"
    );
}
