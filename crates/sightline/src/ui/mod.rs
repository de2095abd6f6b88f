//! The web UI on the API port: server-rendered pages (maud) for incidents, with htmx and uPlot
//! vendored under `assets/` and embedded in the binary.
//!
//! Pages: `/` (services), `/services/{name}`, `/traces/{id}`, `/logs` (with a live tail over
//! server-sent events at `/logs/stream`), `/query`, `/alerts` and `/alerts/{id}`, `/slos` and
//! `/slos/{name}`, `/compare` and `/quality`. Every page keeps its state in the URL.

mod compare;
mod incident;
mod layout;
mod login;
mod logs;
mod monitor;
mod quality;
mod query;
mod service;
mod services;
mod trace;
mod window;

use std::collections::HashMap;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::html;
use sightline_model::ErrorCode;

use crate::pipeline::LogTail;
use crate::server::api::ApiState;

/// What the pages share: the API's engine, store and clock, and the live log tail.
#[derive(Clone)]
pub struct UiState {
    pub api: ApiState,
    pub tail: LogTail,
    /// True once the server is stopping; long-lived answers (the live tail) end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Tokens and sessions (the login page).
    pub auth: crate::auth::Auth,
}

impl UiState {
    fn now_ns(&self) -> i64 {
        self.api.clock.now_ns()
    }
}

pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/", get(services::page))
        .route("/services/{name}", get(service::page))
        .route("/traces/{trace_id}", get(trace::page))
        .route("/logs", get(logs::page))
        .route("/logs/stream", get(logs::stream))
        .route("/query", get(query::page))
        .route("/slos", get(monitor::slos_page))
        .route("/slos/{name}", get(monitor::slo_page))
        .route("/alerts", get(monitor::alerts_page))
        .route("/alerts/{id}", get(incident::alert_page))
        .route("/compare", get(compare::page))
        .route("/quality", get(quality::page))
        .route("/silences", axum::routing::post(monitor::add_silence))
        .route(
            "/silences/{id}/expire",
            axum::routing::post(monitor::expire_silence),
        )
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", get(login::logout))
        .route("/static/{version}/{file}", get(asset))
        .layer(axum::middleware::from_fn(server_timing))
        .with_state(state)
}

/// Says how long the server took for a page (`Server-Timing: page;dur=12.3`, milliseconds):
/// browsers show it in their network panel and `sightline bench pages` reads it.
async fn server_timing(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = header::HeaderValue::from_str(&format!("page;dur={ms:.2}")) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("server-timing"), value);
    }
    response
}

/// The files the pages load, embedded at build time.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript",
        include_bytes!("../../assets/vendor/htmx-2.0.11.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript",
        include_bytes!("../../assets/vendor/uPlot-1.6.32.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css",
        include_bytes!("../../assets/vendor/uPlot-1.6.32.min.css"),
    ),
    (
        "app.js",
        "text/javascript",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css",
        include_bytes!("../../assets/app.css"),
    ),
];

/// Asset URLs carry the binary's version, so browsers may cache them for good.
fn asset_url(file: &str) -> String {
    format!("/static/{}/{file}", env!("CARGO_PKG_VERSION"))
}

async fn asset(Path((_version, file)): Path<(String, String)>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        None => {
            UiError::new(ErrorCode::NotFound, format!("no static file {file:?}")).into_response()
        }
    }
}

/// A page that could not be shown: an HTML page saying why, with the code's status.
#[derive(Debug)]
pub struct UiError {
    pub code: ErrorCode,
    pub message: String,
}

impl UiError {
    /// An error of `code`; an internal one is logged with its detail now and shows a reference.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: crate::server::error::client_message(code, message.into()),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl From<sightline_query::Error> for UiError {
    fn from(e: sightline_query::Error) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = crate::server::error::http_status(self.code);
        let title = if status == StatusCode::NOT_FOUND {
            "Not found"
        } else {
            "Cannot show this page"
        };
        let body = layout::page(
            title,
            layout::Section::Trace,
            None,
            html! {
                h1 { (title) }
                p.error role="alert" { (self.message) }
                p { a href="/" { "Back to services" } }
            },
            false,
        );
        crate::server::with_retry_after(
            (status, Html(body.into_string())).into_response(),
            self.code,
        )
    }
}

/// Query parameters with empty values dropped.
fn param<'a>(params: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    params.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}
