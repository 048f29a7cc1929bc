//! The admin server's requests and replies: which path does what, who may ask, and the
//! bodies (plain, JSON, and the never-ending events stream).
//!
//! Who may ask: the probes (`/health`, `/ready`, `/live`) and the page's static files are
//! open; everything else wants the token when one is set (`Authorization: Bearer TOKEN`, or
//! `?token=` where a browser cannot set a header: `EventSource`). Actions are POSTs that must
//! carry the token header, or without a token the header `X-Herdsman-Action`, which a page of
//! another origin cannot send without a CORS preflight this server never grants; a request
//! whose `Origin` is not this server is refused besides.
//!
//! Methods: `HEAD` is answered wherever `GET` is, with the status and headers `GET` would get
//! and no body (RFC 9110 §9.3.2), for the load balancers that probe with it (HAProxy's
//! `option httpchk HEAD /health`); another method on a known path is 405 with `Allow`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, VARY};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{events, metrics, Shared};
use crate::control::protocol::{ClusterStatus, LogLine};
use crate::domain::{self, ScaleTarget, Update, WorkerPhase};
use crate::primary::Intent;

const DASHBOARD_HTML: &str = include_str!("dashboard.html");
const DASHBOARD_JS: &str = include_str!("dashboard.js");
/// The header an action needs when no token is set.
const ACTION_HEADER: &str = "x-herdsman-action";
/// The most log lines `/api/logs` returns.
const MAX_LOG_LINES: usize = 1000;

pub type ReplyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

pub async fn handle(
    request: Request<Incoming>,
    shared: &Shared,
    shutdown: CancellationToken,
) -> Result<Response<ReplyBody>, Infallible> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    // A HEAD is served as the GET it asks about: hyper writes the headers, Content-Length
    // from the body's exact size among them, and drops the body unsent.
    let method = if request.method() == Method::HEAD {
        Method::GET
    } else {
        request.method().clone()
    };
    let open = matches!(
        path.as_str(),
        "/health" | "/ready" | "/live" | "/" | "/dashboard.js"
    );
    if !open && !authorized(&request, &query, shared.token.as_deref()) {
        return Ok(text(
            StatusCode::UNAUTHORIZED,
            "this admin server wants its token: `Authorization: Bearer TOKEN` (--admin-token)\n",
        ));
    }
    let Some(allowed) = allowed_methods(&path) else {
        return Ok(not_found());
    };
    if !allowed.split(", ").any(|taken| taken == method.as_str()) {
        let mut reply = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "this page does not take that method; `Allow` says which it takes\n",
        );
        reply
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        return Ok(reply);
    }
    if method == Method::POST {
        if let Some(refusal) = refuse_action(&request, shared.token.is_some()) {
            return Ok(text(StatusCode::FORBIDDEN, refusal));
        }
    }
    let reply = match (method, path.as_str()) {
        (Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (Method::GET, "/health") => match status(shared).await {
            Some(status) if status.slots.iter().any(domain::SlotStatus::is_ready) => {
                text(StatusCode::OK, "ok\n")
            }
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "no worker is ready\n"),
        },
        (Method::GET, "/ready") => match status(shared).await {
            Some(status) if all_ready(&status) => text(StatusCode::OK, "ready\n"),
            _ => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not every worker is ready\n",
            ),
        },
        (Method::GET, "/metrics") => match status(shared).await {
            Some(status) => {
                let accept: Vec<&str> = request
                    .headers()
                    .get_all(ACCEPT)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .collect();
                let format = metrics::Format::negotiate(&accept.join(","));
                let mut exposition = reply(
                    StatusCode::OK,
                    format.content_type(),
                    metrics::render(&status, format),
                );
                // The answer depends on `Accept`: caches must not give one scraper's to another.
                exposition
                    .headers_mut()
                    .insert(VARY, HeaderValue::from_static("accept"));
                exposition
            }
            None => stopping(),
        },
        (Method::GET, "/api/status") => match status(shared).await {
            Some(status) => json(
                StatusCode::OK,
                serde_json::to_string_pretty(&ClusterStatus::from(&status)).unwrap_or_default(),
            ),
            None => stopping(),
        },
        (Method::GET, "/api/logs") => {
            let slot = match parameter(&query, "slot").map(str::parse::<usize>) {
                None => None,
                Some(Ok(slot)) => Some(slot),
                Some(Err(_)) => {
                    let body =
                        serde_json::json!({ "error": "slot= takes a slot number, e.g. slot=1" });
                    return Ok(json(StatusCode::BAD_REQUEST, body.to_string()));
                }
            };
            if let Some(slot) = slot {
                // As `herdsman logs --slot` does: a slot the cluster lacks is not an empty log.
                let Some(status) = status(shared).await else {
                    return Ok(stopping());
                };
                if let Some(missing) = ClusterStatus::from(&status).missing_slot(slot) {
                    let body = serde_json::json!({ "error": missing });
                    return Ok(json(StatusCode::NOT_FOUND, body.to_string()));
                }
            }
            let lines = parameter(&query, "lines")
                .and_then(|lines| lines.parse().ok())
                .unwrap_or(100)
                .min(MAX_LOG_LINES);
            let (entries, _) = shared.hub.recent(slot, lines);
            let lines: Vec<LogLine> = entries.iter().map(LogLine::from).collect();
            json(
                StatusCode::OK,
                serde_json::to_string(&lines).unwrap_or_default(),
            )
        }
        (Method::GET, "/api/events") => events::follow(shared, shutdown),
        (Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD_HTML),
        (Method::GET, "/dashboard.js") => reply(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            DASHBOARD_JS,
        ),
        (Method::POST, "/api/reload") => {
            let (progress, updates) = mpsc::unbounded_channel();
            let _ = shared.intents.send(Intent::Reload {
                parallel: 1,
                progress: Some(progress),
            });
            outcome(updates).await
        }
        (Method::POST, "/api/restart") => {
            match parameter(&query, "slot").and_then(|slot| slot.parse().ok()) {
                Some(slot) => {
                    let (progress, updates) = mpsc::unbounded_channel();
                    let _ = shared.intents.send(Intent::Restart {
                        slot,
                        progress: Some(progress),
                    });
                    outcome(updates).await
                }
                None => text(
                    StatusCode::BAD_REQUEST,
                    "give the slot: /api/restart?slot=N\n",
                ),
            }
        }
        (Method::POST, "/api/scale") => {
            match parameter(&query, "to").and_then(|to| to.parse::<ScaleTarget>().ok()) {
                Some(target) => {
                    let (progress, updates) = mpsc::unbounded_channel();
                    let _ = shared.intents.send(Intent::Scale {
                        target,
                        progress: Some(progress),
                    });
                    outcome(updates).await
                }
                None => text(
                    StatusCode::BAD_REQUEST,
                    "give the count: /api/scale?to=N (or +K, -K; %2B for +)\n",
                ),
            }
        }
        _ => not_found(),
    };
    Ok(reply)
}

/// The methods `path` takes, as `Allow` lists them; `None` for a path this server does not have.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/health" | "/ready" | "/live" | "/metrics" | "/api/status" | "/api/logs"
        | "/api/events" | "/" | "/dashboard.js" => Some("GET, HEAD"),
        "/api/reload" | "/api/restart" | "/api/scale" => Some("POST"),
        _ => None,
    }
}

/// All N slots have a ready worker.
fn all_ready(status: &domain::ClusterStatus) -> bool {
    (1..=status.workers).all(|slot| {
        status.slots.iter().any(|row| {
            row.slot == slot
                && row
                    .worker()
                    .is_some_and(|worker| worker.phase == WorkerPhase::Ready)
        })
    })
}

/// The supervisor's status, as the control socket gets it; `None` once it is stopping.
async fn status(shared: &Shared) -> Option<domain::ClusterStatus> {
    let (reply, status) = oneshot::channel();
    shared.intents.send(Intent::Status(reply)).ok()?;
    status.await.ok()
}

fn authorized(request: &Request<Incoming>, query: &str, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let bearer = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let given = bearer.or_else(|| parameter(query, "token"));
    given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an action (a POST) is refused: sent by a page of another origin, or without the header
/// only a same-origin script can add.
fn refuse_action(request: &Request<Incoming>, has_token: bool) -> Option<&'static str> {
    let headers = request.headers();
    if let Some(origin) = headers.get(ORIGIN) {
        let host = headers.get(HOST).and_then(|host| host.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|origin| origin.split_once("://"))
            .map(|(_, host)| host);
        if host.is_none() || origin_host != host {
            return Some("refused: this request comes from a page of another origin\n");
        }
    }
    let header = if has_token {
        AUTHORIZATION.as_str()
    } else {
        ACTION_HEADER
    };
    (!headers.contains_key(header)).then_some(
        "refused: an action needs the header `Authorization: Bearer TOKEN`, or without \
         --admin-token `X-Herdsman-Action: 1`\n",
    )
}

/// A query parameter's raw value (`+` written as `%2B`).
fn parameter<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Waits for a long request's end and answers with it: 200 and the message, or 409.
async fn outcome(mut updates: mpsc::UnboundedReceiver<Update>) -> Response<ReplyBody> {
    let mut lines = Vec::new();
    while let Some(update) = updates.recv().await {
        match update {
            Update::Progress { message } => lines.push(message),
            Update::Done { ok, message } => {
                let body = serde_json::json!({ "ok": ok, "message": message, "progress": lines });
                let code = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::CONFLICT
                };
                return json(code, body.to_string());
            }
        }
    }
    stopping()
}

fn reply(code: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Response<ReplyBody> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

fn text(code: StatusCode, body: &'static str) -> Response<ReplyBody> {
    reply(code, "text/plain; charset=utf-8", body)
}

fn json(code: StatusCode, body: String) -> Response<ReplyBody> {
    reply(code, "application/json", body)
}

fn not_found() -> Response<ReplyBody> {
    text(StatusCode::NOT_FOUND, "no such page\n")
}

fn stopping() -> Response<ReplyBody> {
    text(StatusCode::SERVICE_UNAVAILABLE, "the primary is stopping\n")
}
