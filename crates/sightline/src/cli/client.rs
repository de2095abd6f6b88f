//! The HTTP client of the verbs that read from a server: error answers become messages that say
//! what the server said, and connection failures say which address was tried.

use anyhow::{Context, anyhow};
use serde_json::Value;

pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    /// `SIGHTLINE_TOKEN`, sent as a bearer token when the server needs one.
    token: Option<String>,
}

impl ApiClient {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .build()
            .context("cannot create an HTTP client")?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            http,
            token: std::env::var("SIGHTLINE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn read(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        Ok(self.read_text(request, what).await?.1)
    }

    /// The answer as the server wrote it, and parsed: `--json` prints the first, so numbers
    /// keep every digit the server gave them.
    async fn read_text(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<(String, Value)> {
        let response = self.authorized(request).send().await.map_err(|e| {
            anyhow!("cannot reach Sightline at {} ({e}); is `sightline serve` running? (--url sets the address)", self.base)
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{what}: the answer was cut off; try again"))?;
        let body: Value = serde_json::from_str(&text)
            .with_context(|| format!("{what}: the answer is not JSON"))?;
        if status.is_success() {
            return Ok((text, body));
        }
        let message = body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        Err(anyhow!("{what} failed ({status}): {message}"))
    }

    pub async fn get(
        &self,
        path: &str,
        params: &[(&str, String)],
        what: &str,
    ) -> anyhow::Result<Value> {
        let request = self.http.get(format!("{}{path}", self.base)).query(params);
        self.read(request, what).await
    }

    /// As `get`, with the answer's text as the server wrote it.
    pub async fn get_text(
        &self,
        path: &str,
        params: &[(&str, String)],
        what: &str,
    ) -> anyhow::Result<(String, Value)> {
        let request = self.http.get(format!("{}{path}", self.base)).query(params);
        self.read_text(request, what).await
    }

    pub async fn post(&self, path: &str, body: &Value, what: &str) -> anyhow::Result<Value> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        self.read(request, what).await
    }

    pub async fn delete(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        let request = self.http.delete(format!("{}{path}", self.base));
        self.read(request, what).await
    }
}

/// A JSON cell as plain text (strings without quotes, null as empty).
pub fn plain(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
