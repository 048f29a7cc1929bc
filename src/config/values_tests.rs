//! The value types' parsing and display (`values`).

use super::*;

#[test]
fn worker_counts() {
    assert_eq!("max".parse::<WorkerCount>(), Ok(WorkerCount::Max));
    assert_eq!("MAX".parse::<WorkerCount>(), Ok(WorkerCount::Max));
    assert_eq!("3".parse::<WorkerCount>(), Ok(WorkerCount::Exactly(3)));
    assert_eq!(
        "0".parse::<WorkerCount>(),
        Err("the cluster needs at least 1 worker".to_string())
    );
    assert_eq!(
        "two".parse::<WorkerCount>(),
        Err("expected a number of workers or `max`, got `two`".to_string())
    );
    assert!(WorkerCount::Max.resolve() >= 1);
}

#[test]
fn signals_by_name_and_number() {
    assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
    assert_eq!(parse_signal("sigint"), Ok(Signal::SIGINT));
    assert_eq!(parse_signal("SIGQUIT"), Ok(Signal::SIGQUIT));
    assert_eq!(parse_signal("10"), Ok(Signal::SIGUSR1));
    assert!(parse_signal("NOPE")
        .unwrap_err()
        .contains("`NOPE` is not a signal name"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
    assert!(parse_duration("soon")
        .unwrap_err()
        .starts_with("`soon` is not a duration"));
}

#[test]
fn state_and_sizes() {
    assert_eq!(parse_state("off"), Ok(StateMode::Off));
    assert_eq!(
        parse_state("redis://10.0.0.5:6379/2"),
        Ok(StateMode::External("redis://10.0.0.5:6379/2".into()))
    );
    assert!(parse_state("memcached://x")
        .unwrap_err()
        .contains("Redis URL"));
    assert_eq!(parse_size("100mb"), Ok(100 << 20));
    assert_eq!(parse_size("1k"), Ok(1000));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("0").is_err());
    assert_eq!(
        parse_log_size("10mb").map(|size| size.shown()),
        Ok("10mb".into())
    );
    assert_eq!(ByteSize(1500).shown(), "1500");
    assert_eq!(ByteSize(2048).shown(), "2kb");
    assert_eq!(parse_keep("0"), Ok(0));
    assert_eq!(
        parse_keep("-1"),
        Err("`-1` is not a number of files to keep (0 or more, e.g. 5)".into())
    );
}

#[test]
fn balance_from_the_environment() {
    assert_eq!("shared".parse(), Ok(Balance::Shared));
    assert_eq!("reuseport".parse(), Ok(Balance::Reuseport));
    assert_eq!("proxy".parse(), Ok(Balance::Proxy));
    assert_eq!("proxy-rr".parse(), Ok(Balance::ProxyRr));
    assert_eq!(
        "random".parse::<Balance>(),
        Err(
            "`random` is not `shared`, `reuseport`, `round-robin`, `least-conn`, `proxy` or `proxy-rr`"
                .to_string()
        )
    );
}
