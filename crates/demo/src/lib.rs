//! The demo shop's telemetry as a library, without sockets: realistic OTLP requests of a small
//! Python shop, for `sightline demo`, the benchmarks, the bench dataset and tests. An API gateway
//! calls orders and payments (FastAPI-style server spans, PostgreSQL and Redis client spans, an
//! outbound call to a payment provider); orders enqueues a Celery-style task that a worker
//! consumes (producer/consumer spans joined by a link). Logs carry trace ids; runtime and
//! business metrics come with [`metrics_at`]. Releases roll over time, and faults come and go on
//! a ten-minute cycle ([`conditions_at`]): a slow query, a failing payment provider, a bad
//! release; or one named fault of [`SCENARIOS`] from a moment on ([`Scenario::conditions_at`]).
//! Requests carry a tenant (`tenant.id`), checkouts a payment provider, and orders runs on three
//! hosts. The same seed replays the same shop.

#![deny(missing_docs)]

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as Any,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

const MS: i64 = 1_000_000;

/// A small deterministic random source (xorshift), so a seed replays the same shop.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// A source seeded with `seed`; a zero seed is taken as 1, because xorshift stays at zero
    /// forever.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (0 to 1).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A log-normal-ish duration around `median_ms`.
    fn duration_ns(&mut self, median_ms: f64) -> i64 {
        let spread = (-2.0 * (self.unit().max(1e-9)).ln()).sqrt()
            * (2.0 * std::f64::consts::PI * self.unit()).cos();
        ((median_ms * (0.45 * spread).exp()) * MS as f64).max(50_000.0) as i64
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(N);
        while out.len() < N {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(N);
        out
    }
}

fn kv(key: &str, value: impl Into<Attr>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(value.into().0),
        }),
        ..Default::default()
    }
}

struct Attr(Any);

impl From<&str> for Attr {
    fn from(v: &str) -> Self {
        Attr(Any::StringValue(v.to_string()))
    }
}
impl From<String> for Attr {
    fn from(v: String) -> Self {
        Attr(Any::StringValue(v))
    }
}
impl From<i64> for Attr {
    fn from(v: i64) -> Self {
        Attr(Any::IntValue(v))
    }
}
impl From<f64> for Attr {
    fn from(v: f64) -> Self {
        Attr(Any::DoubleValue(v))
    }
}

/// The state of the shop at one moment: which releases run and which faults are active.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Conditions {
    /// The `service.version` the orders service reports: "1.5.0" during the bad release,
    /// "1.4.2" otherwise.
    pub orders_version: &'static str,
    /// The bad orders release runs: some order reads fail with a 500 and a `KeyError`.
    pub bad_release: bool,
    /// Queries on the `orders` table are slow (a median of 900 ms instead of 4 ms).
    pub slow_query: bool,
    /// The card payment provider fails: most of its calls time out (the wallet provider, a
    /// third of the checkouts, keeps working).
    pub provider_down: bool,
    /// Every database query of this tenant (`tenant.id`) is slow.
    pub slow_tenant: Option<&'static str>,
    /// This orders instance (`host.name`) is slow at everything: a noisy neighbour.
    pub slow_host: Option<&'static str>,
    /// The email worker has been falling behind for this many seconds: slow report exports
    /// hog it, the queue grows and receipts wait longer and longer.
    pub backlog_s: Option<f64>,
}

/// The tenants of the shop, as `tenant.id` on the gateway's and orders' request spans (one per
/// trace, from its id, so the shop's random sequence is the same with or without them).
pub const TENANTS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];

/// The orders service's instances, as `host.name` (the other services run one, `{service}-7d9f`).
pub const ORDERS_HOSTS: [&str; 3] = ["orders-7d9f", "orders-5c2a", "orders-8b1e"];

/// The payment providers a checkout is charged through (`payment.provider`): the card
/// provider for two checkouts in three, the wallet provider for the others.
pub const PROVIDERS: [(&str, &str); 2] = [
    ("card", "api.payments-provider.example"),
    ("wallet", "api.wallet-provider.example"),
];

fn tenant_of(trace: &[u8]) -> &'static str {
    TENANTS[trace[1] as usize % TENANTS.len()]
}

fn orders_host_of(trace: &[u8]) -> &'static str {
    ORDERS_HOSTS[trace[2] as usize % ORDERS_HOSTS.len()]
}

fn provider_of(trace: &[u8]) -> (&'static str, &'static str) {
    PROVIDERS[usize::from(trace[3] % 3 == 2)]
}

/// Faults follow a 10-minute cycle so that a newcomer sees each within minutes: a slow query in
/// minutes 2–3, the payment provider failing in minutes 5–6, and a bad orders release (v1.5.0)
/// in minutes 8–9 that is then rolled back.
pub fn conditions_at(now_ns: i64) -> Conditions {
    let minute = (now_ns / (60 * 1_000_000_000)).rem_euclid(10);
    let bad_release = minute >= 8;
    Conditions {
        orders_version: if bad_release { "1.5.0" } else { "1.4.2" },
        bad_release,
        slow_query: (2..4).contains(&minute),
        provider_down: (5..7).contains(&minute),
        ..Conditions::default()
    }
}

/// A named fault, run on its own by `sightline demo --scenario NAME` instead of the cycle: the
/// shop is healthy until the fault begins, then the fault holds until the demo stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What happens, in words.
    pub summary: &'static str,
    /// The injected cause as an explanation names it: a dimension and its value.
    pub cause: (&'static str, &'static str),
    /// An SLO or alert rule (`sightline.toml`) that fires on it.
    pub alert: &'static str,
}

/// The scenarios, in the order `--list` shows them.
pub const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "bad-release",
        summary: "orders 1.5.0 is deployed and fails 30% of order reads with a KeyError",
        cause: ("service.version", "1.5.0"),
        alert: "[[slo]]\nname = \"order-reads\"\nservice = \"orders\"\nroute = \"/api/orders/{order_id}\"\nindicator = \"availability\"\nobjective = 99.5\n",
    },
    Scenario {
        name: "slow-dependency",
        summary: "the database slows down for one tenant (tenant.id = acme): its queries take about 900 ms",
        cause: ("tenant.id", "acme"),
        alert: "[[alert]]\nname = \"orders-slow\"\nservice = \"orders\"\nmeasure = \"p95\"\nabove = 0.3\nwindow = \"5m\"\n",
    },
    Scenario {
        name: "dependency-down",
        summary: "the card payment provider times out on most charges; the wallet provider keeps working",
        cause: ("payment.provider", "card"),
        alert: "[[alert]]\nname = \"checkout-errors\"\nservice = \"orders\"\nroute = \"/api/checkout\"\nmeasure = \"error_rate\"\nabove = 0.1\nwindow = \"5m\"\n",
    },
    Scenario {
        name: "queue-backlog",
        summary: "report exports hog the email worker: the queue grows and receipts wait longer and longer",
        cause: ("celery.task_name", "shop.tasks.export_report"),
        alert: "[[alert]]\nname = \"worker-slow\"\nservice = \"email-worker\"\nmeasure = \"p95\"\nabove = 1.0\nwindow = \"5m\"\n",
    },
    Scenario {
        name: "noisy-neighbour",
        summary: "one orders instance (host.name = orders-8b1e) shares its machine with a noisy neighbour and is slow at everything",
        cause: ("host.name", "orders-8b1e"),
        alert: "[[alert]]\nname = \"orders-slow\"\nservice = \"orders\"\nmeasure = \"p95\"\nabove = 0.3\nwindow = \"5m\"\n",
    },
];

/// The scenario named `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

impl Scenario {
    /// The shop at `now_ns` when the fault began at `fault_start_ns`: healthy before it.
    pub fn conditions_at(&self, now_ns: i64, fault_start_ns: i64) -> Conditions {
        let healthy = Conditions {
            orders_version: "1.4.2",
            ..Conditions::default()
        };
        if now_ns < fault_start_ns {
            return healthy;
        }
        let since_s = (now_ns - fault_start_ns) as f64 / 1e9;
        match self.name {
            "bad-release" => Conditions {
                orders_version: "1.5.0",
                bad_release: true,
                ..healthy
            },
            "slow-dependency" => Conditions {
                slow_tenant: Some(self.cause.1),
                ..healthy
            },
            "dependency-down" => Conditions {
                provider_down: true,
                ..healthy
            },
            "queue-backlog" => Conditions {
                backlog_s: Some(since_s),
                ..healthy
            },
            "noisy-neighbour" => Conditions {
                slow_host: Some(self.cause.1),
                ..healthy
            },
            _ => healthy,
        }
    }
}

/// Collects one second of the shop's telemetry.
#[derive(Debug, Default)]
pub struct Batch {
    spans: Vec<(Origin, Span)>,
    logs: Vec<(Origin, LogRecord)>,
    /// The orders instance serving the request being made.
    orders_host: &'static str,
    /// How many requests through the shop this batch holds.
    pub requests: u64,
}

const SERVICES: [(&str, &str); 4] = [
    ("api-gateway", "2.3.1"),
    ("orders", "1.4.2"),
    ("payments", "3.0.7"),
    ("email-worker", "1.1.0"),
];

fn version_of(service: &str, conditions: &Conditions) -> &'static str {
    if service == "orders" {
        return conditions.orders_version;
    }
    SERVICES
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, v)| *v)
        .unwrap_or("0.0.0")
}

/// Which process sent a span or a line: its service and, for orders, its instance's host.
type Origin = (&'static str, &'static str);

fn resource(service: &str, host: &str, conditions: &Conditions) -> Resource {
    let host = if host.is_empty() {
        format!("{service}-7d9f")
    } else {
        host.to_string()
    };
    Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.version", version_of(service, conditions)),
            kv("deployment.environment.name", "demo"),
            kv("telemetry.sdk.language", "python"),
            kv("host.name", host),
        ],
        ..Default::default()
    }
}

struct SpanSpec<'a> {
    trace_id: &'a [u8],
    parent: Option<&'a [u8]>,
    name: String,
    kind: span::SpanKind,
    start_ns: i64,
    duration_ns: i64,
    attributes: Vec<KeyValue>,
    error: Option<(&'a str, &'a str)>,
}

impl Batch {
    fn origin(&self, service: &'static str) -> Origin {
        (
            service,
            if service == "orders" {
                self.orders_host
            } else {
                ""
            },
        )
    }

    fn span(&mut self, span_id: Vec<u8>, service: &'static str, spec: SpanSpec<'_>) -> Vec<u8> {
        let mut events = Vec::new();
        let status = match spec.error {
            Some((exception_type, message)) => {
                events.push(span::Event {
                    time_unix_nano: (spec.start_ns + spec.duration_ns) as u64,
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.type", exception_type),
                        kv("exception.message", message),
                        kv(
                            "exception.stacktrace",
                            format!(
                                "Traceback (most recent call last):\n  File \"/app/{service}/handlers.py\", line 88, in handle\n    result = await call_next(request)\n{exception_type}: {message}"
                            ),
                        ),
                    ],
                    ..Default::default()
                });
                Some(Status {
                    code: 2,
                    message: message.to_string(),
                })
            }
            None => None,
        };
        self.spans.push((
            self.origin(service),
            Span {
                trace_id: spec.trace_id.to_vec(),
                span_id: span_id.clone(),
                parent_span_id: spec.parent.map(<[u8]>::to_vec).unwrap_or_default(),
                name: spec.name,
                kind: spec.kind as i32,
                start_time_unix_nano: spec.start_ns as u64,
                end_time_unix_nano: (spec.start_ns + spec.duration_ns) as u64,
                attributes: spec.attributes,
                events,
                status,
                ..Default::default()
            },
        ));
        span_id
    }

    fn log(
        &mut self,
        service: &'static str,
        time_ns: i64,
        severity: i32,
        body: String,
        (trace, span): (&[u8], &[u8]),
        logger: &str,
    ) {
        let text = match severity {
            17.. => "ERROR",
            13.. => "WARNING",
            _ => "INFO",
        };
        self.logs.push((
            self.origin(service),
            LogRecord {
                time_unix_nano: time_ns as u64,
                observed_time_unix_nano: time_ns as u64,
                severity_number: severity,
                severity_text: text.into(),
                body: Some(AnyValue {
                    value: Some(Any::StringValue(body)),
                }),
                attributes: vec![kv("logger.name", logger), kv("code.function", "handle")],
                trace_id: trace.to_vec(),
                span_id: span.to_vec(),
                ..Default::default()
            },
        ));
    }

    /// One request through the shop, starting at `start_ns`.
    pub fn request(&mut self, dice: &mut Dice, start_ns: i64, conditions: &Conditions) {
        self.requests += 1;
        let trace = dice.id::<16>();
        self.orders_host = orders_host_of(&trace);
        let tenant = tenant_of(&trace);
        let roll = dice.unit();
        let (route, target) = match roll {
            r if r < 0.35 => ("/api/products", "/api/products?page=1".to_string()),
            r if r < 0.65 => (
                "/api/orders/{order_id}",
                format!("/api/orders/{}", 1000 + dice.next() % 9000),
            ),
            r if r < 0.92 => ("/api/checkout", "/api/checkout".to_string()),
            _ => ("/healthz", "/healthz".to_string()),
        };
        let method = if route == "/api/checkout" {
            "POST"
        } else {
            "GET"
        };
        let user = format!("user-{}", dice.next() % 500);
        let mut status_code = 200;
        let mut error: Option<(&str, &str)> = None;
        let mut cursor = start_ns + dice.duration_ns(0.4);
        let gateway_duration;

        let gateway_attrs = |code: i64| {
            vec![
                kv("http.request.method", method),
                kv("http.route", route),
                kv("url.path", target.clone()),
                kv("url.scheme", "https"),
                kv("http.response.status_code", code),
                kv("enduser.id", user.clone()),
                kv("tenant.id", tenant),
                kv(
                    "user_agent.original",
                    "Mozilla/5.0 (Macintosh) shop-web/5.2",
                ),
            ]
        };
        // The gateway's span is written last, when its children decided its outcome.
        let gateway_span = dice.id::<8>();

        if route == "/healthz" {
            gateway_duration = dice.duration_ns(0.8);
        } else {
            let upstream = if route == "/api/products" {
                "catalog"
            } else {
                "orders"
            };
            let client_start = cursor;
            let client_span = dice.id::<8>();
            let (orders_span_duration, orders_status, orders_error) =
                self.orders(dice, &trace, &client_span, client_start, route, conditions);
            self.span(
                client_span,
                "api-gateway",
                SpanSpec {
                    trace_id: &trace,
                    parent: Some(&gateway_span),
                    name: method.to_string(),
                    kind: span::SpanKind::Client,
                    start_ns: client_start,
                    duration_ns: orders_span_duration + dice.duration_ns(0.6),
                    attributes: vec![
                        kv("http.request.method", method),
                        kv("server.address", upstream),
                        kv("url.full", format!("http://{upstream}:8000{target}")),
                        kv("http.response.status_code", orders_status),
                    ],
                    error: None,
                },
            );
            cursor = client_start + orders_span_duration + dice.duration_ns(1.0);
            status_code = orders_status;
            error = orders_error;
            gateway_duration = cursor - start_ns + dice.duration_ns(0.5);
        }
        let span_status = if status_code >= 500 { Some(2) } else { None };
        self.spans.push((
            self.origin("api-gateway"),
            Span {
                trace_id: trace.clone(),
                span_id: gateway_span.clone(),
                name: format!("{method} {route}"),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start_ns as u64,
                end_time_unix_nano: (start_ns + gateway_duration) as u64,
                attributes: gateway_attrs(status_code),
                status: span_status.map(|code| Status {
                    code,
                    message: String::new(),
                }),
                ..Default::default()
            },
        ));
        if let Some((kind, message)) = error {
            self.log(
                "api-gateway",
                start_ns + gateway_duration,
                17,
                format!("{method} {target} failed upstream with {status_code}: {kind}: {message}"),
                (&trace, &gateway_span),
                "gateway.proxy",
            );
        } else if gateway_duration > 800 * MS {
            self.log(
                "api-gateway",
                start_ns + gateway_duration,
                13,
                format!(
                    "slow request {method} {target} took {} ms",
                    gateway_duration / MS
                ),
                (&trace, &gateway_span),
                "gateway.proxy",
            );
        }
    }

    /// The orders (or catalog) service's part; returns its duration, HTTP status and error.
    fn orders(
        &mut self,
        dice: &mut Dice,
        trace: &[u8],
        parent: &[u8],
        start_ns: i64,
        route: &'static str,
        conditions: &Conditions,
    ) -> (i64, i64, Option<(&'static str, &'static str)>) {
        let server_span = dice.id::<8>();
        let mut cursor = start_ns + dice.duration_ns(0.3);
        // Redis cache lookup.
        let cache_hit = dice.chance(0.7);
        self.span(
            dice.id::<8>(),
            "orders",
            SpanSpec {
                trace_id: trace,
                parent: Some(&server_span),
                name: "GET".into(),
                kind: span::SpanKind::Client,
                start_ns: cursor,
                duration_ns: dice.duration_ns(0.4),
                attributes: vec![
                    kv("db.system", "redis"),
                    kv("db.operation.name", "GET"),
                    kv("server.address", "redis"),
                    kv("cache.hit", if cache_hit { "true" } else { "false" }),
                ],
                error: None,
            },
        );
        cursor += dice.duration_ns(0.6);
        // PostgreSQL query; slow during the slow-query episode.
        let (statement, table) = match route {
            "/api/products" => (
                "SELECT id, name, price FROM products ORDER BY popularity DESC LIMIT 50",
                "products",
            ),
            "/api/checkout" => (
                "INSERT INTO orders (user_id, total, status) VALUES ($1, $2, 'pending') RETURNING id",
                "orders",
            ),
            _ => ("SELECT * FROM orders WHERE id = $1", "orders"),
        };
        let tenant = tenant_of(trace);
        let noisy = conditions.slow_host == Some(self.orders_host);
        let db_median = if (conditions.slow_query && table == "orders")
            || conditions.slow_tenant == Some(tenant)
        {
            900.0
        } else if noisy {
            80.0
        } else {
            4.0
        };
        if noisy {
            // Starved of CPU by its neighbour: everything takes longer.
            cursor += dice.duration_ns(350.0);
        }
        let db_duration = dice.duration_ns(db_median);
        let db_span = self.span(
            dice.id::<8>(),
            "orders",
            SpanSpec {
                trace_id: trace,
                parent: Some(&server_span),
                name: format!(
                    "{} {table}",
                    statement.split_whitespace().next().unwrap_or("SELECT")
                ),
                kind: span::SpanKind::Client,
                start_ns: cursor,
                duration_ns: db_duration,
                attributes: vec![
                    kv("db.system", "postgresql"),
                    kv("db.namespace", "shop"),
                    kv("db.query.text", statement),
                    kv("server.address", "postgres"),
                ],
                error: None,
            },
        );
        if db_duration > 500 * MS {
            self.log("orders", cursor + db_duration, 13,
                format!("slow query on {table}: {} ms (sequential scan, missing index on orders.user_id?)", db_duration / MS), (trace, &db_span), "orders.db");
        }
        cursor += db_duration;
        let mut status = 200;
        let mut error = None;
        if route == "/api/checkout" {
            let (pay_duration, pay_error) =
                self.payments(dice, trace, &server_span, cursor, conditions);
            cursor += pay_duration;
            if let Some(e) = pay_error {
                status = 502;
                error = Some(e);
            } else {
                // Hand the receipt to the worker through the queue.
                let producer = self.span(
                    dice.id::<8>(),
                    "orders",
                    SpanSpec {
                        trace_id: trace,
                        parent: Some(&server_span),
                        name: "apply_async/send_receipt".into(),
                        kind: span::SpanKind::Producer,
                        start_ns: cursor,
                        duration_ns: dice.duration_ns(0.5),
                        attributes: vec![
                            kv("messaging.system", "celery"),
                            kv("messaging.destination.name", "emails"),
                            kv("celery.task_name", "shop.tasks.send_receipt"),
                        ],
                        error: None,
                    },
                );
                // Behind a backlog, receipts wait longer and longer (up to two minutes).
                let backlog_ns = conditions
                    .backlog_s
                    .map_or(0, |s| ((s * 0.2).min(120.0) * 1e9) as i64);
                let queue_delay = dice.duration_ns(40.0) + backlog_ns;
                if conditions.backlog_s.is_some() && dice.chance(0.3) {
                    self.export_report(dice, cursor);
                }
                self.worker(dice, trace, &producer, cursor + queue_delay);
                self.log(
                    "orders",
                    cursor,
                    9,
                    "order created; receipt queued".into(),
                    (trace, &server_span),
                    "orders.checkout",
                );
                cursor += dice.duration_ns(0.6);
            }
        }
        if conditions.bad_release && route == "/api/orders/{order_id}" && dice.chance(0.3) {
            status = 500;
            error = Some(("KeyError", "'shipping_address'"));
            self.log(
                "orders",
                cursor,
                17,
                "unhandled error rendering order: KeyError 'shipping_address'".into(),
                (trace, &server_span),
                "orders.api",
            );
        }
        let duration = cursor - start_ns + dice.duration_ns(0.4);
        let server_error = (status >= 500).then_some(()).and(error);
        self.spans.push((
            self.origin("orders"),
            Span {
                trace_id: trace.to_vec(),
                span_id: server_span,
                parent_span_id: parent.to_vec(),
                name: format!("{} {route}", if route == "/api/checkout" { "POST" } else { "GET" }),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start_ns as u64,
                end_time_unix_nano: (start_ns + duration) as u64,
                attributes: {
                    let mut a = vec![
                        kv("http.request.method", if route == "/api/checkout" { "POST" } else { "GET" }),
                        kv("http.route", route),
                        kv("http.response.status_code", status),
                        kv("tenant.id", tenant),
                    ];
                    if route == "/api/checkout" {
                        a.push(kv("payment.provider", provider_of(trace).0));
                    }
                    a
                },
                events: server_error
                    .map(|(t, m)| vec![span::Event {
                        time_unix_nano: (start_ns + duration) as u64,
                        name: "exception".into(),
                        attributes: vec![kv("exception.type", t), kv("exception.message", m),
                            kv("exception.stacktrace", format!("Traceback (most recent call last):\n  File \"/app/orders/views.py\", line 57, in get_order\n    address = order[\"shipping_address\"]\n{t}: {m}"))],
                        ..Default::default()
                    }])
                    .unwrap_or_default(),
                status: (status >= 500).then(|| Status { code: 2, message: error.map(|e| e.1.to_string()).unwrap_or_default() }),
                ..Default::default()
            },
        ));
        (duration, status, error)
    }

    fn payments(
        &mut self,
        dice: &mut Dice,
        trace: &[u8],
        parent: &[u8],
        start_ns: i64,
        conditions: &Conditions,
    ) -> (i64, Option<(&'static str, &'static str)>) {
        let server_span = dice.id::<8>();
        let (provider, host) = provider_of(trace);
        let failing = conditions.provider_down && provider == "card" && dice.chance(0.6);
        let provider_duration = if failing {
            dice.duration_ns(3000.0)
        } else {
            dice.duration_ns(180.0)
        };
        let error = failing.then_some((
            "httpx.ReadTimeout",
            "timed out reading from api.payments-provider.example",
        ));
        let url = format!("https://{host}/v1/charges");
        self.span(
            dice.id::<8>(),
            "payments",
            SpanSpec {
                trace_id: trace,
                parent: Some(&server_span),
                name: "POST".into(),
                kind: span::SpanKind::Client,
                start_ns: start_ns + MS,
                duration_ns: provider_duration,
                attributes: vec![
                    kv("http.request.method", "POST"),
                    kv("server.address", host),
                    kv("url.full", url),
                ],
                error,
            },
        );
        let duration = provider_duration + dice.duration_ns(2.0);
        let status = if failing { 502 } else { 200 };
        self.spans.push((
            self.origin("payments"),
            Span {
                trace_id: trace.to_vec(),
                span_id: server_span.clone(),
                parent_span_id: parent.to_vec(),
                name: "POST /charges".into(),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start_ns as u64,
                end_time_unix_nano: (start_ns + duration) as u64,
                attributes: vec![
                    kv("http.request.method", "POST"),
                    kv("http.route", "/charges"),
                    kv("http.response.status_code", status as i64),
                    kv("payment.provider", provider),
                ],
                status: failing.then(|| Status {
                    code: 2,
                    message: "payment provider timed out".into(),
                }),
                ..Default::default()
            },
        ));
        if failing {
            self.log(
                "payments",
                start_ns + duration,
                17,
                "charge failed: payment provider timed out after 3 s; retrying later".into(),
                (trace, &server_span),
                "payments.charge",
            );
        }
        (duration, error)
    }

    /// A report export the worker runs on its own (a scheduled job, its own trace): slow, and
    /// during a backlog frequent enough to hold the receipts up.
    fn export_report(&mut self, dice: &mut Dice, start_ns: i64) {
        let trace = dice.id::<16>();
        let consumer = dice.id::<8>();
        let duration = dice.duration_ns(7000.0);
        self.spans.push((
            self.origin("email-worker"),
            Span {
                trace_id: trace.clone(),
                span_id: consumer.clone(),
                name: "run/export_report".into(),
                kind: span::SpanKind::Consumer as i32,
                start_time_unix_nano: start_ns as u64,
                end_time_unix_nano: (start_ns + duration) as u64,
                attributes: vec![
                    kv("messaging.system", "celery"),
                    kv("celery.task_name", "shop.tasks.export_report"),
                    kv("celery.state", "SUCCESS"),
                ],
                ..Default::default()
            },
        ));
        self.log(
            "email-worker",
            start_ns + duration,
            13,
            format!(
                "report exported: {} rows in {} ms",
                10_000 + dice.next() % 90_000,
                duration / MS
            ),
            (&trace, &consumer),
            "celery.worker",
        );
    }

    fn worker(&mut self, dice: &mut Dice, trace: &[u8], producer: &[u8], start_ns: i64) {
        let consumer = dice.id::<8>();
        let duration = dice.duration_ns(120.0);
        self.span(
            dice.id::<8>(),
            "email-worker",
            SpanSpec {
                trace_id: trace,
                parent: Some(&consumer),
                name: "smtp send".into(),
                kind: span::SpanKind::Client,
                start_ns: start_ns + MS,
                duration_ns: duration - 2 * MS,
                attributes: vec![
                    kv("server.address", "smtp.mail.example"),
                    kv("network.transport", "tcp"),
                ],
                error: None,
            },
        );
        self.spans.push((
            self.origin("email-worker"),
            Span {
                trace_id: trace.to_vec(),
                span_id: consumer.clone(),
                parent_span_id: producer.to_vec(),
                name: "run/send_receipt".into(),
                kind: span::SpanKind::Consumer as i32,
                start_time_unix_nano: start_ns as u64,
                end_time_unix_nano: (start_ns + duration) as u64,
                attributes: vec![
                    kv("messaging.system", "celery"),
                    kv("celery.task_name", "shop.tasks.send_receipt"),
                    kv("celery.state", "SUCCESS"),
                ],
                links: vec![span::Link {
                    trace_id: trace.to_vec(),
                    span_id: producer.to_vec(),
                    attributes: vec![kv("messaging.operation.type", "receive")],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ));
        self.log(
            "email-worker",
            start_ns + duration,
            9,
            "receipt sent".into(),
            (trace, &consumer),
            "celery.worker",
        );
    }

    /// The spans and logs gathered so far as export requests.
    pub fn into_requests(
        self,
        conditions: &Conditions,
    ) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
        let scope = |name: &str| {
            Some(InstrumentationScope {
                name: name.into(),
                ..Default::default()
            })
        };
        let mut traces = ExportTraceServiceRequest::default();
        let mut logs = ExportLogsServiceRequest::default();
        let mut origins: Vec<Origin> = self.spans.iter().map(|(o, _)| *o).collect();
        origins.extend(self.logs.iter().map(|(o, _)| *o));
        origins.sort_by_key(|(service, host)| {
            (SERVICES.iter().position(|(s, _)| s == service), *host)
        });
        origins.dedup();
        for origin in origins {
            let (service, host) = origin;
            let spans: Vec<Span> = self
                .spans
                .iter()
                .filter(|(o, _)| *o == origin)
                .map(|(_, span)| span.clone())
                .collect();
            if !spans.is_empty() {
                traces.resource_spans.push(ResourceSpans {
                    resource: Some(resource(service, host, conditions)),
                    scope_spans: vec![ScopeSpans {
                        scope: scope("opentelemetry.instrumentation.fastapi"),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
            let records: Vec<LogRecord> = self
                .logs
                .iter()
                .filter(|(o, _)| *o == origin)
                .map(|(_, r)| r.clone())
                .collect();
            if !records.is_empty() {
                logs.resource_logs.push(ResourceLogs {
                    resource: Some(resource(service, host, conditions)),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(service),
                        log_records: records,
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
        }
        (traces, logs)
    }
}

/// `requests` requests through the shop started in the second before `now_ns`, as one traces
/// and one logs export request (what one batch of a busy service's exporter carries).
pub fn export_requests(
    dice: &mut Dice,
    requests: usize,
    now_ns: i64,
) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
    let conditions = conditions_at(now_ns);
    let mut batch = Batch::default();
    for i in 0..requests {
        batch.request(dice, now_ns - 1_000_000_000 + i as i64 * 1_000, &conditions);
    }
    batch.into_requests(&conditions)
}

/// Runtime and business metrics of every service at `now_ns`.
pub fn metrics_at(
    dice: &mut Dice,
    now_ns: i64,
    start_ns: i64,
    requests_total: u64,
    conditions: &Conditions,
) -> ExportMetricsServiceRequest {
    let point = |value: f64, attrs: Vec<KeyValue>| NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start_ns as u64,
        time_unix_nano: now_ns as u64,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    let gauge = |name: &str, unit: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    };
    let counter = |name: &str, unit: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let mut request = ExportMetricsServiceRequest::default();
    for (service, _) in SERVICES {
        let load = 0.15
            + dice.unit() * 0.2
            + if conditions.slow_query && service == "orders" {
                0.35
            } else {
                0.0
            };
        let mut metrics = vec![
            gauge(
                "process.cpu.utilization",
                "1",
                vec![point(load.min(1.0), vec![])],
            ),
            gauge(
                "process.memory.usage",
                "By",
                vec![point(180e6 + dice.unit() * 40e6, vec![])],
            ),
            gauge(
                "process.thread.count",
                "{thread}",
                vec![point((8 + dice.next() % 4) as f64, vec![])],
            ),
            // As the OpenTelemetry system-metrics instrumentation names them.
            counter(
                "process.cpu.time",
                "s",
                vec![
                    point(requests_total as f64 * 0.004, vec![kv("type", "user")]),
                    point(requests_total as f64 * 0.001, vec![kv("type", "system")]),
                ],
            ),
            counter(
                "cpython.gc.collections",
                "{collection}",
                vec![
                    point((requests_total / 40) as f64, vec![kv("generation", "0")]),
                    point((requests_total / 400) as f64, vec![kv("generation", "1")]),
                    point((requests_total / 4000) as f64, vec![kv("generation", "2")]),
                ],
            ),
        ];
        if service == "email-worker" {
            let depth = match conditions.backlog_s {
                Some(behind) => 40.0 + (behind * 2.0).min(5000.0) + 10.0 * dice.unit(),
                None if conditions.provider_down => 5.0,
                None => 40.0 * dice.unit(),
            };
            metrics.push(gauge(
                "celery.queue.depth",
                "{task}",
                vec![point(depth.round(), vec![kv("queue", "emails")])],
            ));
        }
        if service == "orders" {
            metrics.push(counter(
                "shop.orders.created",
                "{order}",
                vec![point(
                    (requests_total as f64 * 0.27).round(),
                    vec![kv("channel", "web")],
                )],
            ));
            let bounds = vec![5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
            let counts: Vec<u64> = (0..=bounds.len())
                .map(|i| {
                    if conditions.slow_query && i >= 7 {
                        30
                    } else {
                        60u64 >> i.min(6)
                    }
                })
                .collect();
            let count = counts.iter().sum();
            metrics.push(Metric {
                name: "http.server.request.duration".into(),
                unit: "ms".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: vec![
                            kv("http.route", "/api/orders/{order_id}"),
                            kv("http.request.method", "GET"),
                        ],
                        start_time_unix_nano: (now_ns - 5_000_000_000) as u64,
                        time_unix_nano: now_ns as u64,
                        count,
                        sum: Some(count as f64 * if conditions.slow_query { 400.0 } else { 12.0 }),
                        bucket_counts: counts,
                        explicit_bounds: bounds,
                        ..Default::default()
                    }],
                    aggregation_temporality: 1,
                })),
                ..Default::default()
            });
        }
        request.resource_metrics.push(ResourceMetrics {
            resource: Some(resource(service, "", conditions)),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_crosses_four_services_with_a_linked_worker_span() {
        let mut dice = Dice::new(7);
        let conditions = conditions_at(0);
        let mut batch = Batch::default();
        for i in 0..200 {
            batch.request(&mut dice, 1_000_000_000 + i, &conditions);
        }
        let services: std::collections::BTreeSet<&str> =
            batch.spans.iter().map(|((s, _), _)| *s).collect();
        assert_eq!(services.len(), 4, "{services:?}");
        let consumer = batch
            .spans
            .iter()
            .find(|(_, s)| s.kind == span::SpanKind::Consumer as i32)
            .expect("a worker span");
        assert_eq!(consumer.1.links.len(), 1);
        assert_eq!(consumer.1.links[0].span_id, consumer.1.parent_span_id);
        assert!(batch.logs.iter().all(|(_, l)| l.trace_id.len() == 16));
        let orders_server = batch
            .spans
            .iter()
            .find(|((s, _), span)| *s == "orders" && span.kind == span::SpanKind::Server as i32)
            .expect("an orders request");
        let parent = batch
            .spans
            .iter()
            .find(|(_, span)| span.span_id == orders_server.1.parent_span_id)
            .expect("the parent is in the batch");
        assert_eq!(
            (parent.0.0, parent.1.kind),
            ("api-gateway", span::SpanKind::Client as i32)
        );
        let (traces, logs) = batch.into_requests(&conditions);
        // One resource per process: orders runs on three hosts.
        assert_eq!(traces.resource_spans.len(), 6);
        assert!(!logs.resource_logs.is_empty());
    }

    #[test]
    fn a_scenario_is_healthy_until_its_fault_begins_and_then_holds_it() {
        let minute = 60 * 1_000_000_000i64;
        let start = 30 * minute;
        for s in &SCENARIOS {
            let before = s.conditions_at(start - 1, start);
            assert_eq!(before.orders_version, "1.4.2", "{}", s.name);
            assert!(!before.bad_release && !before.provider_down && before.slow_tenant.is_none());
            assert_ne!(
                s.conditions_at(start + 5 * minute, start),
                before,
                "{}",
                s.name
            );
            // The cycle's own faults never join in.
            assert!(
                !s.conditions_at(start + 2 * minute, start).slow_query,
                "{}",
                s.name
            );
        }
        assert_eq!(
            scenario("slow-dependency")
                .unwrap()
                .conditions_at(start, start)
                .slow_tenant,
            Some("acme")
        );
        assert!(scenario("nope").is_none());
    }

    #[test]
    fn the_slow_tenant_slows_only_its_own_queries() {
        let mut dice = Dice::new(5);
        let conditions = scenario("slow-dependency").unwrap().conditions_at(1, 0);
        let mut batch = Batch::default();
        for i in 0..600 {
            batch.request(&mut dice, 1_000_000_000 + i, &conditions);
        }
        let tenant_of_span = |span: &Span| {
            span.attributes
                .iter()
                .find(|kv| kv.key == "tenant.id")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(v) => Some(v.clone()),
                    _ => None,
                })
        };
        let (mut acme, mut others) = (Vec::new(), Vec::new());
        for ((service, _), span) in &batch.spans {
            if *service == "orders" && span.kind == span::SpanKind::Server as i32 {
                let ms = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
                match tenant_of_span(span).as_deref() {
                    Some("acme") => acme.push(ms),
                    Some(_) => others.push(ms),
                    None => panic!("an orders request without tenant.id"),
                }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        assert!(median(&mut acme) > 300.0, "acme {acme:?}");
        assert!(median(&mut others) < 300.0);
    }

    #[test]
    fn faults_come_and_go_over_ten_minutes() {
        let minute = 60 * 1_000_000_000i64;
        assert!(!conditions_at(0).slow_query && !conditions_at(0).bad_release);
        assert!(conditions_at(2 * minute).slow_query);
        assert!(conditions_at(5 * minute).provider_down);
        assert_eq!(conditions_at(8 * minute).orders_version, "1.5.0");
        assert_eq!(conditions_at(10 * minute), conditions_at(0));
    }

    #[test]
    fn a_bad_release_fails_some_order_reads_with_an_exception() {
        let mut dice = Dice::new(3);
        let conditions = conditions_at(8 * 60 * 1_000_000_000);
        let mut batch = Batch::default();
        for i in 0..300 {
            batch.request(&mut dice, 1_000_000_000 + i, &conditions);
        }
        let failed = batch
            .spans
            .iter()
            .filter(|((s, _), span)| {
                *s == "orders" && span.status.as_ref().is_some_and(|st| st.code == 2)
            })
            .count();
        assert!(failed > 5, "{failed}");
        assert!(
            batch
                .spans
                .iter()
                .any(|(_, s)| s.events.iter().any(|e| e.name == "exception"))
        );
    }
}
