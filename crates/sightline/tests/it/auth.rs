//! Every route of every listener, served, with no token, a token of the wrong scope and one of
//! the right scope: pages send a browser to the login page, the API and `/metrics` answer 401
//! or 403, the public routes answer everyone, the receivers refuse over HTTP (401/403) and gRPC
//! (UNAUTHENTICATED/PERMISSION_DENIED), and a refused export stores nothing.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::Code;

use crate::harness::{Served, gauge_point, log_record, logs, metrics, server_span, traces};

const INGEST: &str = "ingest-token-7f3a9c1e5b2d4a60";
const READ: &str = "read-token-2b8e6d4f0a1c3e57";
const ADMIN: &str = "admin-token-9c4e1a7b3d5f2e68";

/// Who asks: no token, a token of the wrong scope, one of the right scope.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    WrongScope,
    RightScope,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    /// A page: a browser without a session is sent to the login page.
    ReadPage,
    /// The API and `/metrics`.
    Read,
    /// Open to everyone.
    Public,
}

fn token(caller: Caller, needs: Needs) -> Option<&'static str> {
    match (caller, needs) {
        (Caller::Anonymous, _) => None,
        (Caller::WrongScope, Needs::ReadPage | Needs::Read) => Some(INGEST),
        (Caller::WrongScope, Needs::Public) => Some(INGEST),
        (Caller::RightScope, _) => Some(READ),
    }
}

fn expected(caller: Caller, needs: Needs, ok: u16) -> u16 {
    match (caller, needs) {
        (_, Needs::Public) => ok,
        (Caller::Anonymous, Needs::ReadPage) => 303,
        (Caller::Anonymous, Needs::Read) => 401,
        (Caller::WrongScope, _) => 403,
        (Caller::RightScope, _) => ok,
    }
}

/// A gRPC request carrying `bearer` as its token, if any.
fn with_bearer<T>(bearer: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = bearer {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_without_a_token_and_with_the_wrong_scope_and_answers_the_right_one() {
    let served = Served::start(&format!(
        "[[auth.tokens]]\nname = \"collector\"\ntoken = \"{INGEST}\"\nscopes = [\"ingest\"]\n\
         [[auth.tokens]]\nname = \"oncall\"\ntoken = \"{READ}\"\nscopes = [\"read\"]\n\
         [[auth.tokens]]\nname = \"ops\"\ntoken = \"{ADMIN}\"\nscopes = [\"admin\"]\n"
    ))
    .await;
    let (grpc, http, api) = (served.grpc, served.http, served.api);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let callers = [Caller::Anonymous, Caller::WrongScope, Caller::RightScope];

    // The receivers over HTTP, one export per signal and caller; only the ingest token's land.
    let exports = [
        (
            "/v1/traces",
            traces("orders", vec![server_span(1, 200)]).encode_to_vec(),
        ),
        (
            "/v1/logs",
            logs("orders", vec![log_record(1_000, "paid")]).encode_to_vec(),
        ),
        (
            "/v1/metrics",
            metrics("orders", "queue.depth", vec![gauge_point(1_000, 3.0)]).encode_to_vec(),
        ),
    ];
    for (path, body) in &exports {
        for caller in callers {
            let mut request = client
                .post(format!("http://{http}{path}"))
                .header("content-type", "application/x-protobuf")
                .body(body.clone());
            match caller {
                Caller::Anonymous => {}
                Caller::WrongScope => request = request.bearer_auth(READ),
                Caller::RightScope => request = request.bearer_auth(INGEST),
            }
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            let challenge = response.headers().contains_key("www-authenticate");
            let want = match caller {
                Caller::Anonymous => 401,
                Caller::WrongScope => 403,
                Caller::RightScope => 200,
            };
            assert_eq!(status, want, "{path} as {caller:?}");
            assert_eq!(
                challenge,
                want == 401,
                "{path} as {caller:?}: WWW-Authenticate"
            );
        }
    }

    // The receivers over gRPC, the same.
    let endpoint = format!("http://{grpc}");
    for caller in callers {
        let bearer = match caller {
            Caller::Anonymous => None,
            Caller::WrongScope => Some(READ),
            Caller::RightScope => Some(INGEST),
        };
        let want = match caller {
            Caller::Anonymous => Code::Unauthenticated,
            Caller::WrongScope => Code::PermissionDenied,
            Caller::RightScope => Code::Ok,
        };
        let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |s| s.code());
        let traces_code = code(
            TraceServiceClient::connect(endpoint.clone())
                .await
                .expect("a gRPC connection")
                .export(with_bearer(
                    bearer,
                    traces("payments", vec![server_span(2, 200)]),
                ))
                .await
                .map(drop),
        );
        let logs_code = code(
            LogsServiceClient::connect(endpoint.clone())
                .await
                .expect("a gRPC connection")
                .export(with_bearer(
                    bearer,
                    logs("payments", vec![log_record(2_000, "refunded")]),
                ))
                .await
                .map(drop),
        );
        let metrics_code = code(
            MetricsServiceClient::connect(endpoint.clone())
                .await
                .expect("a gRPC connection")
                .export(with_bearer(
                    bearer,
                    metrics("payments", "cpu", vec![gauge_point(2_000, 0.5)]),
                ))
                .await
                .map(drop),
        );
        assert_eq!(
            (traces_code, logs_code, metrics_code),
            (want, want, want),
            "gRPC traces, logs, metrics as {caller:?}"
        );
    }

    // Every route of the UI and API listener.
    let trace = format!("{:032x}", 1);
    let htmx = format!("/static/{}/htmx.min.js", env!("CARGO_PKG_VERSION"));
    let routes: Vec<(&str, String, Needs, u16)> = vec![
        ("GET", "/".into(), Needs::ReadPage, 200),
        ("GET", "/services/orders".into(), Needs::ReadPage, 200),
        ("GET", format!("/traces/{trace}"), Needs::ReadPage, 200),
        ("GET", "/logs".into(), Needs::ReadPage, 200),
        ("GET", "/logs/stream".into(), Needs::ReadPage, 200),
        ("GET", "/query".into(), Needs::ReadPage, 200),
        ("GET", "/alerts".into(), Needs::ReadPage, 200),
        ("GET", "/slos".into(), Needs::ReadPage, 200),
        ("GET", "/quality".into(), Needs::ReadPage, 200),
        ("POST", "/api/v1/query".into(), Needs::Read, 200),
        ("GET", "/api/v1/quality".into(), Needs::Read, 200),
        ("GET", "/api/v1/targets".into(), Needs::Read, 200),
        ("GET", "/jaeger/api/services".into(), Needs::Read, 200),
        (
            "GET",
            format!("/jaeger/api/traces/{trace}"),
            Needs::Read,
            200,
        ),
        ("GET", "/api/v1/slos".into(), Needs::Read, 200),
        ("GET", "/api/v1/alerts".into(), Needs::Read, 200),
        ("GET", "/api/v1/silences".into(), Needs::Read, 200),
        ("GET", "/api/v1/deploys".into(), Needs::Read, 200),
        ("GET", format!("/api/v1/traces/{trace}"), Needs::Read, 200),
        ("GET", "/api/v1/logs?since=1h".into(), Needs::Read, 200),
        ("GET", "/api/v1/services".into(), Needs::Read, 200),
        ("GET", "/api/v1/nothing".into(), Needs::Read, 404),
        ("GET", "/metrics".into(), Needs::Read, 200),
        ("GET", "/healthz".into(), Needs::Public, 200),
        ("GET", "/login".into(), Needs::Public, 200),
        ("GET", htmx, Needs::Public, 200),
    ];
    for (method, path, needs, ok) in &routes {
        for caller in callers {
            let url = format!("http://{api}{path}");
            let mut request = match *method {
                "POST" => client
                    .post(url)
                    .json(&serde_json::json!({"sql": "SELECT count(*) FROM spans"})),
                _ => client.get(url),
            };
            if let Some(t) = token(caller, *needs) {
                request = request.bearer_auth(t);
            }
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            let want = expected(caller, *needs, *ok);
            assert_eq!(status, want, "{method} {path} as {caller:?}");
            if want == 303 {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                assert!(
                    location.starts_with("/login?next="),
                    "{path}: sent to {location}"
                );
            }
            if want == 200 && path == "/logs/stream" {
                let kind = response.headers().get("content-type").cloned();
                assert_eq!(
                    kind.as_ref().and_then(|v| v.to_str().ok()),
                    Some("text/event-stream")
                );
            }
            // The live tail streams until the client goes: dropping the answer closes it.
            drop(response);
        }
    }
    // Changing silences needs admin: read is refused, admin makes one and ends it.
    let silence = serde_json::json!({"matchers": {"service": "orders"}, "duration": "1h", "comment": "deploy"});
    for (bearer, want) in [
        (None, 401),
        (Some(INGEST), 403),
        (Some(READ), 403),
        (Some(ADMIN), 201),
    ] {
        let mut request = client
            .post(format!("http://{api}/api/v1/silences"))
            .json(&silence);
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(
            response.status().as_u16(),
            want,
            "POST /api/v1/silences with {bearer:?}"
        );
        if want == 201 {
            let made: serde_json::Value = response.json().await.expect("json");
            assert_eq!(made["silence"]["created_by"], "ops", "who made it");
            let id = made["id"].as_str().expect("an id").to_string();
            let end = |t: &'static str| {
                client
                    .delete(format!("http://{api}/api/v1/silences/{id}"))
                    .bearer_auth(t)
                    .send()
            };
            assert_eq!(end(READ).await.expect("an answer").status().as_u16(), 403);
            assert_eq!(end(ADMIN).await.expect("an answer").status().as_u16(), 200);
        }
    }
    // Telling of a deploy needs ingest (a CI job's token): read is refused.
    let deploy = serde_json::json!({"service": "orders", "version": "1.5.0", "commit": "abc123"});
    for (bearer, want) in [
        (None, 401),
        (Some(READ), 403),
        (Some(INGEST), 201),
        (Some(ADMIN), 201),
    ] {
        let mut request = client
            .post(format!("http://{api}/api/v1/deploys"))
            .json(&deploy);
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("an answer");
        assert_eq!(
            response.status().as_u16(),
            want,
            "POST /api/v1/deploys with {bearer:?}"
        );
    }
    // Admin may do everything.
    let response = client
        .get(format!("http://{api}/api/v1/services"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let response = client
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(ADMIN)
        .body(traces("orders", vec![server_span(3, 200)]).encode_to_vec())
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);

    // What was refused stored nothing: one export per signal over each transport landed, and
    // admin's trace.
    let answer: serde_json::Value = client
        .post(format!("http://{api}/api/v1/query"))
        .bearer_auth(READ)
        .json(&serde_json::json!({"sql":
            "SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM logs) AS logs, \
             (SELECT count(*) FROM metrics) AS metrics"}))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["rows"], serde_json::json!([[3, 2, 2]]), "{answer}");

    served.stop().await;
}
