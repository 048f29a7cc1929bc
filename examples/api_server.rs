//! A users REST API whose data lives in herdsman's shared-state store, so a user created through
//! one worker is there for every other (per-worker memory would lose that). The README's main job.
//!
//!   cargo run --release --example api_server      # a worker per CPU on port 8000
//!   herdsman run --workers max --port 8000 -- target/release/examples/api_server   # the same
//!
//! | request | answers |
//! |---|---|
//! | `GET /users` | 200, every user, by id |
//! | `POST /users` `{"name": "Ada", "email": "ada@example.com"}` | 201 with the user and its new `id`; 400 for broken JSON, 422 for a missing or bad field |
//! | `GET /users/{id}` | 200, or 404 |
//! | `PUT /users/{id}` `{"name": …, "email": …}` (either or both) | 200 with the user, 404, 400, 422 |
//! | `DELETE /users/{id}` | 204, or 404 |
//! | `GET /health` | 200 `{"status": "ok", "worker": N}` |
//!
//! Storage: `user:ID` is a hash (name, email), `users` the set of ids, `users:next_id` the counter.

use std::process::ExitCode;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herdsman::{Cluster, Worker};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::{json, Map, Value};

#[derive(Clone)]
struct App {
    worker: Worker,
    state: ConnectionManager,
}

/// An error answer: the status and `{"error": message}`.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<redis::RedisError> for Failure {
    fn from(error: redis::RedisError) -> Failure {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("shared state: {error}"),
        )
    }
}

type Answer = Result<Response, Failure>;

fn user_id(text: &str) -> Result<u64, Failure> {
    text.parse().map_err(|_| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("`{text}` is not a user id (a positive integer)"),
        )
    })
}

fn not_found(id: u64) -> Failure {
    Failure(StatusCode::NOT_FOUND, format!("no user {id}"))
}

/// The fields of a request body: a JSON object with `name` and `email` strings; `partial` lets
/// either be absent (PUT).
fn fields(body: &[u8], partial: bool) -> Result<Vec<(&'static str, String)>, Failure> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| Failure(StatusCode::BAD_REQUEST, format!("invalid JSON: {error}")))?;
    let Value::Object(object) = value else {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected a JSON object with `name` and `email`".into(),
        ));
    };
    let mut fields = Vec::new();
    for (name, check) in [
        ("name", check_name as fn(&str) -> Option<&'static str>),
        ("email", check_email),
    ] {
        match object.get(name) {
            None if partial => {}
            None => {
                return Err(Failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{name}` is required"),
                ))
            }
            Some(Value::String(text)) => {
                if let Some(problem) = check(text) {
                    return Err(Failure(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("`{name}` {problem}"),
                    ));
                }
                fields.push((name, text.trim().to_string()));
            }
            Some(_) => {
                return Err(Failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`{name}` must be a string"),
                ))
            }
        }
    }
    if let Some(unknown) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "name" | "email"))
    {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown field `{unknown}` (a user has `name` and `email`)"),
        ));
    }
    if fields.is_empty() {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing to change: give `name`, `email` or both".into(),
        ));
    }
    Ok(fields)
}

fn check_name(name: &str) -> Option<&'static str> {
    let name = name.trim();
    if name.is_empty() {
        Some("must not be empty")
    } else if name.chars().count() > 100 {
        Some("must be at most 100 characters")
    } else {
        None
    }
}

fn check_email(email: &str) -> Option<&'static str> {
    let email = email.trim();
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !email.contains(' ') =>
        {
            None
        }
        _ => Some("must be an email address like ada@example.com"),
    }
}

async fn load(state: &mut ConnectionManager, id: u64) -> Result<Option<Value>, Failure> {
    let fields: Map<String, Value> = state
        .hgetall::<_, Vec<(String, String)>>(format!("user:{id}"))
        .await?
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect();
    if fields.is_empty() {
        return Ok(None);
    }
    let mut user = Map::new();
    user.insert("id".into(), json!(id));
    user.extend(fields);
    Ok(Some(Value::Object(user)))
}

async fn list(State(mut app): State<App>) -> Answer {
    let mut ids: Vec<u64> = app.state.smembers("users").await?;
    ids.sort_unstable();
    let mut users = Vec::with_capacity(ids.len());
    for id in ids {
        users.extend(load(&mut app.state, id).await?);
    }
    Ok(Json(users).into_response())
}

async fn create(State(mut app): State<App>, body: Bytes) -> Answer {
    let fields = fields(&body, false)?;
    let id: u64 = app.state.incr("users:next_id", 1).await?;
    redis::pipe()
        .atomic()
        .hset_multiple(format!("user:{id}"), &fields)
        .sadd("users", id)
        .query_async::<()>(&mut app.state)
        .await?;
    let user = load(&mut app.state, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn show(State(mut app): State<App>, Path(id): Path<String>) -> Answer {
    let id = user_id(&id)?;
    let user = load(&mut app.state, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(user).into_response())
}

async fn update(State(mut app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let id = user_id(&id)?;
    let fields = fields(&body, true)?;
    if !app.state.sismember::<_, _, bool>("users", id).await? {
        return Err(not_found(id));
    }
    app.state
        .hset_multiple::<_, _, _, ()>(format!("user:{id}"), &fields)
        .await?;
    let user = load(&mut app.state, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(user).into_response())
}

async fn remove(State(mut app): State<App>, Path(id): Path<String>) -> Answer {
    let id = user_id(&id)?;
    let (removed, _): (u64, u64) = redis::pipe()
        .atomic()
        .srem("users", id)
        .del(format!("user:{id}"))
        .query_async(&mut app.state)
        .await?;
    if removed == 0 {
        return Err(not_found(id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn health(State(app): State<App>) -> Json<Value> {
    Json(json!({ "status": "ok", "worker": app.worker.id() }))
}

fn main() -> ExitCode {
    Cluster::new()
        .name("api_server")
        .run(|mut worker| async move {
            // Connected to the store before taking the listener, which makes the worker ready.
            let state = worker.state().await?;
            let listener = worker.listener()?;
            let app = Router::new()
                .route("/users", get(list).post(create))
                .route("/users/{id}", get(show).put(update).delete(remove))
                .route("/health", get(health))
                .with_state(App { worker, state });
            axum::serve(listener, app)
                .with_graceful_shutdown(herdsman::worker::shutdown())
                .await?;
            Ok(())
        })
}
