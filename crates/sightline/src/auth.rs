//! Access: tokens with scopes (`ingest`, `read`, `admin`), checked on every receiver and on the
//! UI and API; browser sessions after a login with a token.
//!
//! Tokens come from `[[auth.tokens]]` in `sightline.toml`. Only their SHA-256 digests are kept in
//! memory and compared in constant time. With no token configured, access is open, which `serve`
//! allows only on loopback addresses. `/healthz`, `/login` and the static files stay open so
//! probes and the login page work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sightline_model::{Clock, ConfigError, ErrorCode};
use subtle::ConstantTimeEq;

/// What a token may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send telemetry to the receivers.
    Ingest,
    /// Use the UI and the API (queries, traces, logs, metrics).
    Read,
    /// Everything.
    Admin,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// `[auth]` of `sightline.toml`: the access tokens. Without any, access is open (and `serve`
/// listens on loopback addresses only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`: name, token, scopes.
    pub tokens: Vec<TokenConfig>,
}

impl AuthConfig {
    /// The table of `sightline.toml` these keys live in.
    pub const SECTION: &'static str = "auth";

    /// Refuses tokens that can be guessed, tokens without scopes and a token given twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = format!("{}.tokens", Self::SECTION);
        let mut seen = std::collections::HashSet::new();
        for t in &self.tokens {
            if t.token.chars().count() < MIN_TOKEN_CHARS {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "token {:?} is shorter than {MIN_TOKEN_CHARS} characters; use a random one, e.g. `openssl rand -hex 24`",
                        t.name
                    ),
                ));
            }
            if t.scopes.is_empty() {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "token {:?} has no scopes: give it some of \"ingest\", \"read\", \"admin\"",
                        t.name
                    ),
                ));
            }
            if !seen.insert(digest(&t.token)) {
                return Err(ConfigError::new(
                    &key,
                    format!("token {:?} repeats another token", t.name),
                ));
            }
        }
        Ok(())
    }
}

/// One `[[auth.tokens]]` entry of `sightline.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown in the server's log on refusals, never the token).
    pub name: String,
    /// The secret itself, at least [`MIN_TOKEN_CHARS`] characters.
    pub token: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// Tokens shorter than this are refused at start: they can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;
/// How long a browser session lasts without a new login, on the server's clock.
const SESSION_TTL_NS: i64 = 12 * 3600 * 1_000_000_000;
pub const SESSION_COOKIE: &str = "sightline_session";

struct Token {
    name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Identity {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

struct Session {
    identity: Identity,
    /// When it ends (the server's clock, ns).
    expires_ns: i64,
}

/// The server's tokens and browser sessions.
#[derive(Clone)]
pub struct Auth {
    tokens: Arc<Vec<Token>>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Cookies get `Secure` when the UI is served over TLS.
    secure_cookies: bool,
    /// Session expiry reads this clock.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Auth {
    /// The tokens of a validated [`AuthConfig`] (checked again here, so none can slip past);
    /// without tokens, access is open.
    pub fn new(
        config: &AuthConfig,
        secure_cookies: bool,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let tokens = config
            .tokens
            .iter()
            .map(|t| Token {
                name: t.name.clone(),
                digest: digest(&t.token),
                scopes: t.scopes.clone(),
            })
            .collect();
        Ok(Self {
            tokens: Arc::new(tokens),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            secure_cookies,
            clock,
        })
    }

    /// Open access: no token configured.
    pub fn open(clock: Arc<dyn Clock>) -> Self {
        Self {
            tokens: Arc::new(Vec::new()),
            sessions: Arc::new(Mutex::new(HashMap::new())),
            secure_cookies: false,
            clock,
        }
    }

    /// Whether tokens are required.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The holder of a token, compared in constant time against every configured one.
    pub fn identify_token(&self, token: &str) -> Option<Identity> {
        let d = digest(token.trim());
        let mut found = None;
        for t in self.tokens.iter() {
            if bool::from(t.digest.ct_eq(&d)) {
                found = Some(Identity {
                    name: t.name.clone(),
                    scopes: t.scopes.clone(),
                });
            }
        }
        found
    }

    /// The identity of `Authorization: Bearer ...`, if present and valid.
    pub fn identify_bearer(&self, headers: &HeaderMap) -> Option<Identity> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        self.identify_token(token)
    }

    /// The identity of the session cookie, if present and not expired.
    pub fn identify_session(&self, headers: &HeaderMap) -> Option<Identity> {
        let id = session_cookie(headers)?;
        let mut sessions = self.sessions.lock().ok()?;
        let now_ns = self.clock.now_ns();
        sessions.retain(|_, s| s.expires_ns > now_ns);
        sessions.get(&id).map(|s| s.identity.clone())
    }

    /// Starts a browser session for a token that may read; the cookie to set.
    pub fn login(&self, token: &str) -> Option<HeaderValue> {
        let identity = self
            .identify_token(token)
            .filter(|i| i.allows(Scope::Read))?;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let id = hex::encode(bytes);
        self.sessions.lock().ok()?.insert(
            id.clone(),
            Session {
                identity,
                expires_ns: self.clock.now_ns().saturating_add(SESSION_TTL_NS),
            },
        );
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            SESSION_TTL_NS / 1_000_000_000
        ))
        .ok()
    }

    /// Ends the session of the request's cookie; the cookie that clears it.
    pub fn logout(&self, headers: &HeaderMap) -> HeaderValue {
        if let (Some(id), Ok(mut sessions)) = (session_cookie(headers), self.sessions.lock()) {
            sessions.remove(&id);
        }
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Why a request may not go on, or `None` when it may.
    fn refusal(&self, identity: Option<&Identity>, scope: Scope) -> Option<(ErrorCode, String)> {
        match identity {
            _ if !self.enabled() => None,
            None => Some((
                ErrorCode::Unauthorized,
                format!(
                    "this server needs a token with the {} scope: send `Authorization: Bearer <token>`",
                    scope.as_str()
                ),
            )),
            Some(i) if i.allows(scope) => None,
            Some(i) => Some((
                ErrorCode::Forbidden,
                format!(
                    "token {:?} lacks the {} scope this route needs",
                    i.name,
                    scope.as_str()
                ),
            )),
        }
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

fn json_refusal(code: ErrorCode, message: String) -> Response {
    let mut response = crate::server::ApiError::new(code, message).into_response();
    if code == ErrorCode::Unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sightline\""),
        );
    }
    response
}

/// Middleware of the OTLP/HTTP receiver: a token with the `ingest` scope.
pub async fn require_ingest(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    if !auth.enabled() {
        return next.run(request).await;
    }
    let identity = auth.identify_bearer(request.headers());
    match auth.refusal(identity.as_ref(), Scope::Ingest) {
        None => next.run(request).await,
        Some((code, message)) => {
            tracing::info!(path = %request.uri().path(), ?code, "refused an export without a valid token");
            json_refusal(code, message)
        }
    }
}

/// Middleware of the OTLP/gRPC receiver: a token with the `ingest` scope in the `authorization`
/// metadata, refused with a gRPC status.
pub async fn require_ingest_grpc(
    State(auth): State<Auth>,
    request: Request,
    next: Next,
) -> Response {
    if !auth.enabled() {
        return next.run(request).await;
    }
    let identity = auth.identify_bearer(request.headers());
    match auth.refusal(identity.as_ref(), Scope::Ingest) {
        None => next.run(request).await,
        Some((code, message)) => {
            tracing::info!(path = %request.uri().path(), ?code, "refused a gRPC export without a valid token");
            crate::server::error::grpc_status(code, message).into_http::<axum::body::Body>()
        }
    }
}

/// Paths anyone may open: health probes, the login page and the files it loads.
fn is_public(path: &str) -> bool {
    path == "/healthz" || path == "/login" || path == "/logout" || path.starts_with("/static/")
}

/// The scope a UI or API request needs: `admin` to change silences (the API's writes and the
/// pages' forms) and for anything under `/api/v1/admin` (reads too: a redaction scan shows
/// where secrets are), `ingest` to tell of a deploy, `read` for the rest.
fn scope_for(method: &axum::http::Method, path: &str) -> Scope {
    let writes = method != axum::http::Method::GET && method != axum::http::Method::HEAD;
    if path.starts_with("/api/v1/admin/") {
        Scope::Admin
    } else if writes && (path.starts_with("/api/v1/silences") || path.starts_with("/silences")) {
        Scope::Admin
    } else if writes && path == "/api/v1/deploys" {
        // A CI job's last step tells of a deploy with the token it ships telemetry with.
        Scope::Ingest
    } else {
        Scope::Read
    }
}

/// Middleware of the UI and API: a token with the `read` scope (Bearer) or a session, `admin`
/// for the writes `scope_for` names. Pages send a browser to the login page; the API and
/// `/metrics` answer 401 or 403. Who asked travels on as an [`Identity`] extension.
pub async fn require_read(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if !auth.enabled() || is_public(&path) {
        return next.run(request).await;
    }
    let identity = auth
        .identify_bearer(request.headers())
        .or_else(|| auth.identify_session(request.headers()));
    let scope = scope_for(request.method(), &path);
    match auth.refusal(identity.as_ref(), scope) {
        None => {
            if let Some(identity) = identity {
                request.extensions_mut().insert(identity);
            }
            next.run(request).await
        }
        Some((code, message)) => {
            let is_api =
                path.starts_with("/api/") || path.starts_with("/jaeger/") || path == "/metrics";
            if is_api || code == ErrorCode::Forbidden || request.method() != axum::http::Method::GET
            {
                json_refusal(code, message)
            } else {
                let target = request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                Redirect::to(&format!(
                    "/login?next={}",
                    crate::url::encode_component(&target)
                ))
                .into_response()
            }
        }
    }
}

/// Where a login may send the browser next: a path on this server only.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

/// The status a login failure answers with.
pub const LOGIN_REFUSED: StatusCode = StatusCode::UNAUTHORIZED;

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> Arc<sightline_model::ManualClock> {
        Arc::new(sightline_model::ManualClock::new(1_000_000_000))
    }

    fn auth(tokens: &[TokenConfig], secure: bool) -> Result<Auth, ConfigError> {
        Auth::new(
            &AuthConfig {
                tokens: tokens.to_vec(),
            },
            secure,
            clock(),
        )
    }

    fn tokens() -> Vec<TokenConfig> {
        vec![
            TokenConfig {
                name: "collector".into(),
                token: "ingest-token-0123456789".into(),
                scopes: vec![Scope::Ingest],
            },
            TokenConfig {
                name: "oncall".into(),
                token: "read-token-0123456789ab".into(),
                scopes: vec![Scope::Read],
            },
            TokenConfig {
                name: "ops".into(),
                token: "admin-token-0123456789a".into(),
                scopes: vec![Scope::Admin],
            },
        ]
    }

    #[test]
    fn the_admin_routes_need_the_admin_scope_for_reads_too() {
        use axum::http::Method;
        assert_eq!(
            scope_for(&Method::POST, "/api/v1/admin/maintenance"),
            Scope::Admin
        );
        assert_eq!(
            scope_for(&Method::GET, "/api/v1/admin/redaction/scan"),
            Scope::Admin
        );
        assert_eq!(scope_for(&Method::POST, "/api/v1/silences"), Scope::Admin);
        assert_eq!(scope_for(&Method::POST, "/api/v1/deploys"), Scope::Ingest);
        assert_eq!(scope_for(&Method::GET, "/api/v1/services"), Scope::Read);
    }

    #[test]
    fn scopes_decide_and_admin_may_do_everything() {
        let auth = auth(&tokens(), false).expect("valid tokens");
        let ingest = auth
            .identify_token("ingest-token-0123456789")
            .expect("known");
        assert!(ingest.allows(Scope::Ingest) && !ingest.allows(Scope::Read));
        let admin = auth
            .identify_token("admin-token-0123456789a")
            .expect("known");
        assert!(admin.allows(Scope::Read) && admin.allows(Scope::Ingest));
        assert!(auth.identify_token("admin-token-0123456789b").is_none());
        assert!(matches!(
            auth.refusal(Some(&ingest), Scope::Read),
            Some((ErrorCode::Forbidden, _))
        ));
        assert!(matches!(
            auth.refusal(None, Scope::Read),
            Some((ErrorCode::Unauthorized, _))
        ));
        assert!(auth_open().refusal(None, Scope::Read).is_none());
    }

    #[test]
    fn weak_or_repeated_tokens_are_refused_at_start() {
        let mut weak = tokens();
        weak[0].token = "short".into();
        assert_eq!(
            auth(&weak, false).map(|_| ()).map_err(|e| e.key),
            Err("auth.tokens".to_string())
        );
        let mut twice = tokens();
        twice[1].token = twice[0].token.clone();
        assert!(auth(&twice, false).is_err());
    }

    #[test]
    fn sessions_need_a_read_token_and_cookies_are_locked_down() {
        let clock = clock();
        let auth =
            Auth::new(&AuthConfig { tokens: tokens() }, true, clock.clone()).expect("valid tokens");
        assert!(
            auth.login("ingest-token-0123456789").is_none(),
            "an ingest token cannot open the UI"
        );
        let cookie = auth.login("read-token-0123456789ab").expect("a session");
        let text = cookie.to_str().expect("ascii");
        for part in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
            assert!(text.contains(part), "{text}");
        }
        let id = text.split(';').next().expect("pair");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(id).expect("ascii"));
        assert_eq!(
            auth.identify_session(&headers).map(|i| i.name),
            Some("oncall".to_string())
        );
        clock.advance_ns(SESSION_TTL_NS - 1);
        assert!(auth.identify_session(&headers).is_some(), "not expired yet");
        let again = auth
            .login("read-token-0123456789ab")
            .expect("a second session");
        let again_id = again
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("pair")
            .to_string();
        clock.advance_ns(1);
        assert!(
            auth.identify_session(&headers).is_none(),
            "a session ends twelve hours after its login, on the server's clock"
        );
        let mut second = HeaderMap::new();
        second.insert(
            header::COOKIE,
            HeaderValue::from_str(&again_id).expect("ascii"),
        );
        assert!(auth.identify_session(&second).is_some());
        auth.logout(&second);
        assert!(auth.identify_session(&second).is_none(), "logged out");
    }

    fn auth_open() -> Auth {
        Auth::open(clock())
    }

    #[test]
    fn login_only_sends_the_browser_to_this_server() {
        assert_eq!(safe_next(Some("/traces/ab?span=1")), "/traces/ab?span=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
