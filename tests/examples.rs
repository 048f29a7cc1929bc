//! The example programs in examples/ run under herdsman and serve (issues 4 and 5).

use std::collections::BTreeSet;

use crate::support::{cluster, example_bin, http_request, Cluster};

fn run_example(name: &str, workers: &str) -> Cluster {
    let cluster = cluster()
        .args(&["--workers", workers, "--ready-delay", "300ms"])
        .command(&[&example_bin(name).display().to_string()])
        .start();
    cluster.wait_ready(workers.parse().unwrap());
    cluster
}

#[test]
fn api_server_users_are_the_same_whichever_worker_answers() {
    let cluster = run_example("api_server", "2");
    let address = cluster.address();
    let request = |method: &str, path: &str, body: Option<&str>| {
        let response = http_request(address, method, path, body).expect(path);
        let json = if response.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {response:?}"))
        };
        (response.status, json)
    };
    assert_eq!(request("GET", "/users", None), (200, serde_json::json!([])));
    let (status, ada) = request(
        "POST",
        "/users",
        Some(r#"{"name":"Ada","email":"ada@example.com"}"#),
    );
    assert_eq!(status, 201);
    assert_eq!(
        ada,
        serde_json::json!({"id": 1, "name": "Ada", "email": "ada@example.com"})
    );
    // Created through one worker, found through every worker: new connections spread across
    // both (reuseport), and every one of 40 reads finds the user.
    let mut workers = BTreeSet::new();
    for _ in 0..40 {
        assert_eq!(request("GET", "/users/1", None), (200, ada.clone()));
        let (_, health) = request("GET", "/health", None);
        workers.insert(health["worker"].as_u64().unwrap());
    }
    assert_eq!(workers, BTreeSet::from([1, 2]), "both workers answered");
    let (status, grace) = request(
        "POST",
        "/users",
        Some(r#"{"name":"Grace","email":"grace@example.com"}"#),
    );
    assert_eq!((status, grace["id"].clone()), (201, serde_json::json!(2)));
    assert_eq!(
        request("PUT", "/users/1", Some(r#"{"name":"Ada Lovelace"}"#)),
        (
            200,
            serde_json::json!({"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"})
        )
    );
    let (_, all) = request("GET", "/users", None);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["name"], "Ada Lovelace");
    assert_eq!(
        request("DELETE", "/users/2", None),
        (204, serde_json::Value::Null)
    );
    // The errors: what is wrong, with the right status.
    let cases: [(&str, &str, Option<&str>, u16, &str); 9] = [
        ("GET", "/users/2", None, 404, "no user 2"),
        ("DELETE", "/users/2", None, 404, "no user 2"),
        (
            "PUT",
            "/users/99",
            Some(r#"{"name":"X"}"#),
            404,
            "no user 99",
        ),
        (
            "GET",
            "/users/abc",
            None,
            400,
            "`abc` is not a user id (a positive integer)",
        ),
        (
            "POST",
            "/users",
            Some("{not json"),
            400,
            "invalid JSON: key must be a string at line 1 column 2",
        ),
        (
            "POST",
            "/users",
            Some(r#"{"name":"Ada"}"#),
            422,
            "`email` is required",
        ),
        (
            "POST",
            "/users",
            Some(r#"{"name":"","email":"a@b.c"}"#),
            422,
            "`name` must not be empty",
        ),
        (
            "POST",
            "/users",
            Some(r#"{"name":"A","email":"nope"}"#),
            422,
            "`email` must be an email address like ada@example.com",
        ),
        (
            "PUT",
            "/users/1",
            Some(r#"{"age":3}"#),
            422,
            "unknown field `age` (a user has `name` and `email`)",
        ),
    ];
    for (method, path, body, status, message) in cases {
        assert_eq!(
            request(method, path, body),
            (status, serde_json::json!({ "error": message })),
            "{method} {path} {body:?}"
        );
    }
    assert_eq!(
        request("GET", "/users", None).1.as_array().unwrap().len(),
        1
    );
}
