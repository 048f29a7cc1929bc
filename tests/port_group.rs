//! The cluster's port is its own (issue 11, §2): a foreign `SO_REUSEPORT` socket, an app that
//! binds `$PORT` itself, a second herdsman.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const EXIT_BIND: i32 = 3;

/// A listener on 127.0.0.1:PORT with SO_REUSEPORT, in its own process (python3). With `steal`,
/// it also attaches a reuseport program that sends every new connection to place `steal` of
/// the group (its own, behind herdsman's), as a second steering program would.
const FOREIGN: &str = r#"
import ctypes, socket, struct, sys
port, steal = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
if steal >= 0:
    # struct sock_filter {u16 code; u8 jt, jf; u32 k}: BPF_RET|BPF_K steal
    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, steal))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter}
    s.setsockopt(socket.SOL_SOCKET, 51, struct.pack("HP", 1, ctypes.addressof(program)))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"#;

struct ForeignListener {
    child: Child,
    port: u16,
}

impl ForeignListener {
    fn start(dir: &RuntimeDir, port: u16, steal: Option<u32>) -> ForeignListener {
        let script = write_file(dir, "foreign.py", FOREIGN);
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(steal.map_or(-1, i64::from).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
        ForeignListener { child, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its socket (it exits when its stdin closes) and waits for it.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for ForeignListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many of `count` new connections get an answer within `timeout` each (8 at a time).
fn served(address: SocketAddr, count: usize, timeout: Duration) -> usize {
    let one = move || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.1 200"))
    };
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            std::thread::spawn(move || {
                (thread..count)
                    .step_by(8)
                    .filter(|_| one().unwrap_or(false))
                    .count()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .sum()
}

/// Starts `builder` expecting it to fail at start-up; returns its exit code and stderr.
fn failed_start(builder: ClusterBuilder) -> (i32, String) {
    let mut cluster = builder.no_wait().start();
    let status = cluster.wait_exit();
    (status.code().expect("an exit code"), cluster.log())
}

#[test]
fn a_foreign_reuseport_listener_at_start_up_is_exit_3_naming_it() {
    let dir = RuntimeDir::new();
    let foreign = ForeignListener::start(&dir, 0, None);
    let port = foreign.port;
    for balance in ["reuseport", "shared"] {
        let (code, log) = failed_start(cluster().runtime_dir(&dir).port(port).args(&[
            "-w",
            "2",
            "--balance",
            balance,
        ]));
        assert_eq!(code, EXIT_BIND, "{balance}: {log}");
        let who = format!("pid {} (`", foreign.pid());
        let command = format!("python3 {}/foreign.py 0 -1`)", dir.path().display());
        assert!(
            log.starts_with(&format!(
                "herdsman: error: cannot listen on 127.0.0.1:{port}: "
            )),
            "{balance}: {log}"
        );
        assert!(log.contains(&who), "{balance}: {who} in {log}");
        assert!(log.contains(&command), "{balance}: {command} in {log}");
        assert!(
            log.ends_with("stop it or pick another --port (0 = any free port)"),
            "{balance}: {log}"
        );
    }
    // The foreign socket was never disturbed: it still takes connections.
    TcpStream::connect(("127.0.0.1", port)).expect("the foreign listener still listens");
    foreign.stop();
}

#[test]
fn a_foreign_listener_that_joins_later_is_reported_and_steering_recovers_once_it_leaves() {
    let cluster = cluster()
        .args(&["-w", "2", "--balance", "reuseport", "--name", "joined"])
        .start();
    cluster.wait_ready(2);
    let address = cluster.address();
    assert_eq!(served(address, 50, Duration::from_secs(2)), 50);
    // Behind herdsman's four sockets (2 slots × 2 sides), it takes place 4 and steers there.
    let foreign = ForeignListener::start(&cluster.runtime_dir, address.port(), Some(4));
    let pid = foreign.pid();
    let warning = cluster
        .stderr
        .wait_for(&format!("herdsman: warning: pid {pid} (`"));
    assert!(
        warning.contains(&format!(
            "listens on {address} with SO_REUSEPORT too, in the cluster's port group"
        )),
        "{warning}"
    );
    let status = status_json(&cluster, "joined");
    let listed = &status["foreign_listeners"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(listed[0]["pid"], pid, "{status}");
    assert_eq!(listed[0]["in_group"], true, "{status}");
    assert_eq!(listed[0]["slot"], serde_json::Value::Null, "{status}");
    let text = cluster.herdsman(&["status", "joined"]);
    assert!(
        text.stdout.contains(&format!("warning: pid {pid} (`")),
        "{}",
        text.stdout
    );
    // A socket added now would sit behind the foreign one and move when it leaves.
    let scaled = cluster.herdsman(&["scale", "joined", "+1"]);
    assert_eq!(scaled.code, Some(1), "{scaled:?}");
    assert!(
        scaled
            .stderr
            .contains(&format!("no socket is added while pid {pid} (`")),
        "{scaled:?}"
    );

    let left_at = Instant::now();
    foreign.stop();
    let line = cluster.stderr.wait_for("no longer listens on");
    let noticed = left_at.elapsed();
    assert!(line.contains(&format!("pid {pid} (`")), "{line}");
    assert!(
        line.ends_with("the port is the cluster's alone again"),
        "{line}"
    );
    assert!(
        noticed < Duration::from_secs(1),
        "noticed after {noticed:?}"
    );
    assert_eq!(served(address, 200, Duration::from_secs(2)), 200);
    assert_eq!(
        status_json(&cluster, "joined")["foreign_listeners"],
        serde_json::json!([])
    );
}

#[test]
fn an_app_binding_port_itself_with_reuseport_is_reported() {
    let cluster = cluster()
        .args(&["-w", "1", "--balance", "reuseport", "--name", "selfbind"])
        .env("TESTSERVER_BIND_PORT", "1")
        .env("TESTSERVER_REUSEPORT", "1")
        .env("TESTSERVER_HOST", "127.0.0.1")
        .start();
    let started = cluster.stderr.wait_for("herdsman: worker 1 (pid ");
    let (_, worker) = parse_worker_line(&started);
    let warning = cluster.stderr.wait_for(&format!(
        "herdsman: warning: worker 1 (pid {worker}) listens on {} itself, with SO_REUSEPORT",
        cluster.address()
    ));
    assert!(
        warning.ends_with("make the app use the inherited socket instead of binding $PORT"),
        "{warning}"
    );
    let listed = eventually("the worker's socket in status", || {
        let status = status_json(&cluster, "selfbind");
        let listed = status["foreign_listeners"].as_array()?.first()?.clone();
        Some(listed)
    });
    assert_eq!(listed["slot"], 1, "{listed}");
    assert_eq!(listed["in_group"], true, "{listed}");
}

#[test]
fn a_second_herdsman_on_the_port_is_exit_3_naming_the_first() {
    for balance in ["reuseport", "shared"] {
        let first = cluster()
            .args(&["-w", "2", "--balance", balance, "--name", "first"])
            .start();
        first.wait_ready(2);
        let port = first.address().port();
        for second_balance in ["reuseport", "shared"] {
            let (code, log) =
                failed_start(cluster().runtime_dir(&first.runtime_dir).port(port).args(&[
                    "-w",
                    "2",
                    "--balance",
                    second_balance,
                    "--name",
                    "second",
                ]));
            assert_eq!(code, EXIT_BIND, "{balance}/{second_balance}: {log}");
            let named = format!("herdsman cluster `first` (primary pid {})", first.pid());
            assert!(log.contains(&named), "{balance}/{second_balance}: {log}");
            assert!(
                log.contains("stop it (`herdsman stop first`) or pick another --port"),
                "{balance}/{second_balance}: {log}"
            );
        }
        // Another user's runtime directory: the primary is named by its pid and command.
        let (code, log) = failed_start(cluster().port(port).args(&["--balance", balance]));
        assert_eq!(code, EXIT_BIND, "{log}");
        let named = format!("pid {} (`{} run ", first.pid(), herdsman_bin().display());
        assert!(log.contains(&named), "{named} in {log}");
        assert_eq!(
            served(first.address(), 200, Duration::from_secs(2)),
            200,
            "{balance}: the first cluster serves on"
        );
        assert!(!first.log().contains("warning"), "{}", first.log());
    }
}
