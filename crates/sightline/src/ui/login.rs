//! `/login` and `/logout`: a browser signs in with a token that has the `read` scope and gets a
//! session cookie (HttpOnly, SameSite=Lax, Secure over TLS).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::UiState;
use super::layout::{self, Section};
use crate::auth;

fn login_form(next: &str, error: Option<&str>) -> Html<String> {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form #login-form method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label for="token" { "Access token (with the read scope)" }
            input #token type="password" name="token" autocomplete="current-password" autofocus required;
            button type="submit" { "Sign in" }
        }
        p.hint { "Tokens are set under [[auth.tokens]] in sightline.toml." }
    };
    Html(layout::page("Sign in", Section::Trace, None, body, false).into_string())
}

pub async fn page(
    State(state): State<UiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let next = auth::safe_next(params.get("next").map(String::as_str));
    if !state.auth.enabled() {
        return Redirect::to(&next).into_response();
    }
    login_form(&next, None).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn submit(State(state): State<UiState>, Form(form): Form<LoginForm>) -> Response {
    let next = auth::safe_next(form.next.as_deref());
    match state.auth.login(&form.token) {
        Some(cookie) => {
            let mut response = Redirect::to(&next).into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        None => {
            tracing::info!("refused a sign-in with an unknown token or one without the read scope");
            (
                auth::LOGIN_REFUSED,
                login_form(
                    &next,
                    Some("That token is unknown or lacks the read scope."),
                ),
            )
                .into_response()
        }
    }
}

pub async fn logout(State(state): State<UiState>, headers: HeaderMap) -> Response {
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.auth.logout(&headers));
    response
}
