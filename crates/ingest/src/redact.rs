//! Redaction: secrets and personal data replaced in the decoded request, before normalization,
//! so the write-ahead log, segments, promoted columns, live tails and every answer only ever see
//! the redacted value. The record itself is kept.
//!
//! Two kinds of rule:
//!
//! - `keys`: the value of an attribute (or of a key inside a map: a structured log body, a
//!   nested attribute) whose key contains one of `[redaction] keys` (case-insensitive
//!   substrings: `password`, `token`, `authorization`, ...) is replaced whole, when it is text,
//!   bytes, an array or a map (numbers and booleans are counts and flags, not secrets:
//!   `gen_ai.usage.input_tokens` stays). The same keys are found inside text (`password=hunter2`,
//!   `"api_key": "…"` in a log line or a stack trace), in URL query strings
//!   (`url.full`, `http.url`, `url.query`, `http.target`: `?token=…`) and in a URL's user info
//!   (`https://user:secret@host`).
//! - patterns, found anywhere in text (attribute values, log bodies, span and event names,
//!   status messages, exception messages and stack traces): `card_numbers` (13 to 19 digits,
//!   spaces or dashes between, starting as a card network's numbers do and Luhn-checked, so
//!   order ids and zero-padded counters are not caught), `jwt`,
//!   `bearer_tokens` (the credential after `Bearer` or `Basic`), `api_keys` (AWS access key ids,
//!   GitHub, Slack, Stripe and Google API keys), and the opt-in `emails`, `ip_addresses`,
//!   `phone_numbers`, plus `[[redaction.patterns]]` of the operator's own.
//!
//! `mode = "mask"` writes `[REDACTED:rule]`; `mode = "hash"` writes `hash:` and the first 16 hex
//! digits of HMAC-SHA256 under `hash_key`, so equal values stay equal (joinable) without being
//! readable. A value already redacted is left as it is.
//!
//! Cost: every text value is read once by an Aho-Corasick automaton of the rules' anchors (`eyJ`,
//! `bearer`, `AKIA`, the sensitive keys, ...) and a digit count; the regular expressions run only
//! on text that holds an anchor, so a request without secrets pays a scan and no regex.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use hmac::{Hmac, KeyInit, Mac};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sightline_model::ConfigError;

/// The rule of sensitive keys.
pub const KEYS: &str = "keys";
/// Card numbers, Luhn-checked.
pub const CARD_NUMBERS: &str = "card_numbers";
/// JSON Web Tokens.
pub const JWT: &str = "jwt";
/// The credential of `Bearer …` and `Basic …`.
pub const BEARER_TOKENS: &str = "bearer_tokens";
/// Well-known API key shapes.
pub const API_KEYS: &str = "api_keys";
/// Email addresses (opt-in).
pub const EMAILS: &str = "emails";
/// IPv4 and IPv6 addresses (opt-in).
pub const IP_ADDRESSES: &str = "ip_addresses";
/// Phone numbers (opt-in).
pub const PHONE_NUMBERS: &str = "phone_numbers";

/// The built-in rules, those on by default first.
pub const BUILT_IN: [&str; 8] = [
    KEYS,
    CARD_NUMBERS,
    JWT,
    BEARER_TOKENS,
    API_KEYS,
    EMAILS,
    IP_ADDRESSES,
    PHONE_NUMBERS,
];

/// The rules on when `rules` is not given.
pub const DEFAULT_RULES: [&str; 5] = [KEYS, CARD_NUMBERS, JWT, BEARER_TOKENS, API_KEYS];

/// The sensitive keys when `keys` is not given.
pub const DEFAULT_KEYS: [&str; 12] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set-cookie",
    "session",
    "private_key",
    "credentials",
];

/// Attribute keys whose value is a URL or a query string: its query parameters under sensitive
/// keys and its user info are redacted.
pub const URL_KEYS: [&str; 5] = [
    "url.full",
    "http.url",
    "url.query",
    "http.target",
    "url.original",
];

/// The environment variable that holds the hash key when `hash_key` is not in the file.
pub const HASH_KEY_VARIABLE: &str = "SIGHTLINE_REDACTION_KEY";

/// How a redacted value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `[REDACTED:rule]`.
    #[default]
    Mask,
    /// `hash:` + 16 hex digits of HMAC-SHA256 under the hash key.
    Hash,
}

/// One `[[redaction.patterns]]`: text matching `regex` is redacted as rule `name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    /// The rule's name, as counted and written in the mask (`[REDACTED:customer-id]`).
    pub name: String,
    /// A regular expression (Rust `regex` syntax); every match is redacted.
    pub regex: String,
}

/// `[redaction]` of `sightline.toml`. Every key is optional; redaction is on by default.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// False turns every rule off, the operator's patterns too.
    pub enabled: bool,
    /// `mask` or `hash`.
    pub mode: Mode,
    /// The HMAC key of `mode = "hash"` (or [`HASH_KEY_VARIABLE`]); never written back out.
    #[serde(skip_serializing)]
    pub hash_key: Option<String>,
    /// The built-in rules that are on (see [`BUILT_IN`]).
    pub rules: Vec<String>,
    /// Sensitive keys, case-insensitive substrings of an attribute's key.
    pub keys: Vec<String>,
    /// The operator's own patterns, always on while redaction is.
    pub patterns: Vec<PatternConfig>,
}

impl fmt::Debug for RedactionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactionConfig")
            .field("enabled", &self.enabled)
            .field("mode", &self.mode)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "…"))
            .field("rules", &self.rules)
            .field("keys", &self.keys)
            .field("patterns", &self.patterns)
            .finish()
    }
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: Mode::Mask,
            hash_key: None,
            rules: DEFAULT_RULES.iter().map(|r| r.to_string()).collect(),
            keys: DEFAULT_KEYS.iter().map(|k| k.to_string()).collect(),
            patterns: Vec::new(),
        }
    }
}

impl RedactionConfig {
    /// The table of `sightline.toml` these keys live in.
    pub const SECTION: &'static str = "redaction";

    /// Compiles the rules; `env_key` is [`HASH_KEY_VARIABLE`]'s value, used when the file has no
    /// `hash_key`. Refuses an unknown rule, an empty key, a pattern that does not compile or
    /// clashes with a rule's name, and `mode = "hash"` without a key, naming the key.
    pub fn compile(&self, env_key: Option<&str>) -> Result<Redactor, ConfigError> {
        let key = |name: &str| format!("{}.{name}", Self::SECTION);
        if !self.enabled {
            return Ok(Redactor::none());
        }
        let mut on = Vec::new();
        for rule in &self.rules {
            if !BUILT_IN.contains(&rule.as_str()) {
                return Err(ConfigError::new(
                    key("rules"),
                    format!(
                        "names an unknown rule {rule:?}: expected some of {}",
                        BUILT_IN.join(", ")
                    ),
                ));
            }
            if !on.contains(&rule.as_str()) {
                on.push(rule.as_str());
            }
        }
        if let Some(i) = self.keys.iter().position(|k| k.trim().is_empty()) {
            return Err(ConfigError::new(
                format!("{}[{i}]", key("keys")),
                "is empty: an empty key would match every attribute",
            ));
        }
        let mode = match self.mode {
            Mode::Mask => Writer::Mask,
            Mode::Hash => {
                let secret = self
                    .hash_key
                    .as_deref()
                    .or(env_key)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        ConfigError::new(
                            key("hash_key"),
                            format!(
                                "is required for mode = \"hash\": set it, or the environment variable {HASH_KEY_VARIABLE} (keep it secret: it makes hashes comparable)"
                            ),
                        )
                    })?;
                if secret.len() < 16 {
                    return Err(ConfigError::new(
                        key("hash_key"),
                        format!(
                            "must be at least 16 bytes long, not {}: a short key lets hashed values be guessed",
                            secret.len()
                        ),
                    ));
                }
                Writer::Hash(Arc::from(secret.as_bytes()))
            }
        };
        let mut custom = Vec::new();
        for (i, pattern) in self.patterns.iter().enumerate() {
            let at = |field: &str| format!("{}[{i}].{field}", key("patterns"));
            let valid_name = !pattern.name.is_empty()
                && pattern
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(ConfigError::new(
                    at("name"),
                    format!(
                        "{:?} is not a rule name: use letters, digits, '_' and '-'",
                        pattern.name
                    ),
                ));
            }
            if BUILT_IN.contains(&pattern.name.as_str())
                || self.patterns[..i].iter().any(|p| p.name == pattern.name)
            {
                return Err(ConfigError::new(
                    at("name"),
                    format!(
                        "{:?} is already a rule's name: each pattern needs its own",
                        pattern.name
                    ),
                ));
            }
            let regex = Regex::new(&pattern.regex).map_err(|e| {
                ConfigError::new(
                    at("regex"),
                    format!("is not a valid regular expression: {e}"),
                )
            })?;
            if regex.is_match("") {
                return Err(ConfigError::new(
                    at("regex"),
                    format!(
                        "{:?} matches empty text: it would redact nothing useful everywhere",
                        pattern.regex
                    ),
                ));
            }
            custom.push((pattern.name.clone(), regex));
        }
        Ok(Redactor::build(&on, &self.keys, custom, mode))
    }
}

/// How a found secret is written.
#[derive(Clone)]
enum Writer {
    Mask,
    Hash(Arc<[u8]>),
}

/// What a pattern's match must also pass to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    /// The digits pass the Luhn checksum and are 13 to 19.
    Luhn,
    /// The credential looks like one: 8 characters or more with a digit, an inner capital or a
    /// symbol (so `Basic authentication` is not caught).
    Credential,
    /// Parses as an IPv6 address.
    Ipv6,
    /// 8 to 15 digits.
    Phone,
}

/// When a pattern runs: only on text where its anchor was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    /// One of these literals (ASCII case-insensitive).
    Anchors(Vec<String>),
    /// At least this many ASCII digits.
    Digits(usize),
    /// This byte.
    Byte(u8),
    /// Always (the operator's patterns).
    Always,
}

struct Pattern {
    rule: usize,
    regex: Regex,
    /// The capture group that is redacted (0: the whole match).
    group: usize,
    check: Check,
    gate: Gate,
}

/// The compiled rules. Cheap to share ([`Arc`]); [`Redactor::none`] redacts nothing.
#[derive(Clone)]
pub struct Redactor {
    inner: Arc<Inner>,
}

struct Inner {
    /// Rule names by index: the built-in ones that are on, then the operator's.
    names: Vec<Arc<str>>,
    writer: Writer,
    /// The index of `keys` in `names`, when that rule is on.
    keys_rule: Option<usize>,
    /// The sensitive keys (ASCII case-insensitive), when `keys` is on.
    keys: Option<AhoCorasick>,
    patterns: Vec<Pattern>,
    /// Every anchor of every pattern; `anchor_patterns[i]` are the patterns anchor `i` opens,
    /// one bit each.
    anchors: Option<AhoCorasick>,
    anchor_patterns: Vec<u64>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("rules", &self.inner.names)
            .field(
                "mode",
                &match self.inner.writer {
                    Writer::Mask => "mask",
                    Writer::Hash(_) => "hash",
                },
            )
            .finish()
    }
}

impl Default for Redactor {
    /// The default rules in mask mode.
    fn default() -> Self {
        RedactionConfig::default()
            .compile(None)
            .expect("the default rules compile")
    }
}

const ANCHORS_JWT: &[&str] = &["eyJ"];
const ANCHORS_BEARER: &[&str] = &["bearer", "basic"];
const ANCHORS_API_KEYS: &[&str] = &[
    "AKIA",
    "ASIA",
    "AGPA",
    "AIDA",
    "AROA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xoxa-",
    "xoxb-",
    "xoxp-",
    "xoxo-",
    "xoxs-",
    "xoxr-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "whsec_",
    "AIza",
];

/// A built-in pattern rule: its regular expression, the group redacted, its check and gate.
fn built_in(rule: &str) -> Option<(&'static str, usize, Check, Gate)> {
    let anchors = |list: &[&str]| Gate::Anchors(list.iter().map(|a| a.to_string()).collect());
    Some(match rule {
        CARD_NUMBERS => (
            r"\b\d(?:[ -]?\d){12,18}\b",
            0,
            Check::Luhn,
            Gate::Digits(13),
        ),
        JWT => (
            r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
            0,
            Check::None,
            anchors(ANCHORS_JWT),
        ),
        BEARER_TOKENS => (
            r"(?i)\b(?:bearer|basic)\s+([A-Za-z0-9._~+/-]+=*)",
            1,
            Check::Credential,
            anchors(ANCHORS_BEARER),
        ),
        API_KEYS => (
            concat!(
                r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",
                r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
                r"|\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
                r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",
                r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}\b",
                r"|\bwhsec_[A-Za-z0-9+/=]{20,}",
                r"|\bAIza[0-9A-Za-z_-]{35}\b",
            ),
            0,
            Check::None,
            anchors(ANCHORS_API_KEYS),
        ),
        EMAILS => (
            r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
            0,
            Check::None,
            Gate::Byte(b'@'),
        ),
        IP_ADDRESSES => (
            concat!(
                r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b",
                r"|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}",
            ),
            0,
            Check::Ipv6,
            Gate::Digits(2),
        ),
        PHONE_NUMBERS => (
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\b\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}\b",
            0,
            Check::Phone,
            Gate::Digits(8),
        ),
        _ => return None,
    })
}

/// Where one secret is in a text and which rule found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The rule's index in [`Redactor::rule_names`].
    pub rule: usize,
    /// The bytes replaced.
    pub range: Range<usize>,
}

/// Redactions in one request: per service, per rule index, how many values were replaced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redactions {
    /// `(service, rule)` → values replaced.
    pub counts: BTreeMap<(String, Arc<str>), u64>,
}

impl Redactions {
    /// Values replaced in all.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// Counts of one walk: the rule indexes of one service.
struct Tally<'a> {
    names: &'a [Arc<str>],
    service: String,
    counts: Vec<u64>,
    out: &'a mut Redactions,
}

impl Tally<'_> {
    fn flush(&mut self) {
        for (rule, n) in self.counts.iter_mut().enumerate() {
            if *n > 0 {
                *self
                    .out
                    .counts
                    .entry((self.service.clone(), self.names[rule].clone()))
                    .or_default() += *n;
                *n = 0;
            }
        }
    }
}

/// The service a resource names, for counting (the SDKs' default when it names none).
fn service_of(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            },
        )
        .unwrap_or_else(|| crate::resource::UNKNOWN_SERVICE.to_string())
}

/// True when the text at `start` is (inside) a value already redacted: it opens with a mask or
/// a hash, or follows `hash:`.
fn within_redacted(text: &str, start: usize) -> bool {
    let rest = text[start..].trim_start_matches(['"', '\'']);
    rest.starts_with("[REDACTED:")
        || (rest.starts_with("hash:")
            && rest.len() >= 21
            && rest.as_bytes()[5..21].iter().all(u8::is_ascii_hexdigit))
        || text[..start].ends_with("hash:")
        || text[..start].ends_with("[REDACTED:")
}

/// True for a value this redactor (or one with another key or mode) already wrote.
pub fn is_redacted(text: &str) -> bool {
    (text.starts_with("[REDACTED:") && text.ends_with(']'))
        || (text.len() == 21
            && text.starts_with("hash:")
            && text[5..].bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Redactor {
    /// A redactor with no rule: everything passes unchanged.
    pub fn none() -> Self {
        Self::build(&[], &[], Vec::new(), Writer::Mask)
    }

    fn build(on: &[&str], keys: &[String], custom: Vec<(String, Regex)>, writer: Writer) -> Self {
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut patterns = Vec::new();
        let mut keys_rule = None;
        let mut key_automaton = None;
        for rule in on {
            let index = names.len();
            names.push(Arc::from(*rule));
            if *rule == KEYS {
                keys_rule = Some(index);
                if keys.is_empty() {
                    continue;
                }
                key_automaton = Some(
                    AhoCorasickBuilder::new()
                        .ascii_case_insensitive(true)
                        .build(keys)
                        .expect("plain keys build an automaton"),
                );
                // `password=…`, `"api_key": "…"`, `Authorization: Bearer …` inside text: the
                // value after the key (quoted whole, or up to a separator).
                let alternatives: Vec<String> = keys.iter().map(|k| regex::escape(k)).collect();
                let text = format!(
                    r#"(?i)[A-Za-z0-9_.-]*(?:{})[A-Za-z0-9_.-]*["']?[ \t]*[:=][ \t]*("[^"\n]*"|'[^'\n]*'|(?:(?:bearer|basic|token)[ \t]+)?[^\s"'&,;)}}\]]+)"#,
                    alternatives.join("|")
                );
                patterns.push(Pattern {
                    rule: index,
                    regex: Regex::new(&text).expect("escaped keys compile"),
                    group: 1,
                    check: Check::None,
                    gate: Gate::Anchors(keys.to_vec()),
                });
                continue;
            }
            let (regex, group, check, gate) = built_in(rule).expect("a built-in rule");
            patterns.push(Pattern {
                rule: index,
                regex: Regex::new(regex).expect("the built-in patterns compile"),
                group,
                check,
                gate,
            });
        }
        for (name, regex) in custom {
            patterns.push(Pattern {
                rule: names.len(),
                regex,
                group: 0,
                check: Check::None,
                gate: Gate::Always,
            });
            names.push(Arc::from(name.as_str()));
        }
        // Built-in patterns come first, so every anchored one has a bit (custom patterns, past
        // the 64th, always run).
        let mut literals: Vec<&str> = Vec::new();
        let mut anchor_patterns: Vec<u64> = Vec::new();
        for (p, pattern) in patterns.iter().enumerate().take(64) {
            if let Gate::Anchors(list) = &pattern.gate {
                for literal in list {
                    match literals
                        .iter()
                        .position(|l| l.eq_ignore_ascii_case(literal))
                    {
                        Some(i) => anchor_patterns[i] |= 1 << p,
                        None => {
                            literals.push(literal);
                            anchor_patterns.push(1 << p);
                        }
                    }
                }
            }
        }
        // Leftmost-longest, not overlapping: an anchor inside another (`cookie` in
        // `set-cookie`) opens the same rule, and the DFA reads each text once.
        let anchors = (!literals.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&literals)
                .expect("plain anchors build an automaton")
        });
        Self {
            inner: Arc::new(Inner {
                names,
                writer,
                keys_rule,
                keys: key_automaton,
                patterns,
                anchors,
                anchor_patterns,
            }),
        }
    }

    /// The rules that are on, by the index a [`Hit`] carries.
    pub fn rule_names(&self) -> &[Arc<str>] {
        &self.inner.names
    }

    /// True when no rule is on.
    pub fn is_off(&self) -> bool {
        self.inner.names.is_empty()
    }

    /// True when `key` is a sensitive key (the `keys` rule is on and the key contains one).
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        self.inner.keys.as_ref().is_some_and(|k| k.is_match(key))
    }

    /// The secrets in `text`, in order and without overlaps (the earliest, then the longest,
    /// wins); values already redacted are not found again.
    pub fn find(&self, text: &str) -> Vec<Hit> {
        let inner = &*self.inner;
        if text.is_empty() || inner.patterns.is_empty() {
            return Vec::new();
        }
        // Which patterns run, one bit each (a pattern past the 64th always runs).
        let mut run: u64 = 0;
        if let Some(anchors) = &inner.anchors {
            for m in anchors.find_iter(text) {
                run |= inner.anchor_patterns[m.pattern().as_usize()];
            }
        }
        let mut digits = None;
        for (p, pattern) in inner.patterns.iter().enumerate().take(64) {
            let open = match &pattern.gate {
                Gate::Anchors(_) => continue,
                Gate::Digits(n) => {
                    *digits.get_or_insert_with(|| text.bytes().filter(u8::is_ascii_digit).count())
                        >= *n
                }
                Gate::Byte(b) => memchr(*b, text),
                Gate::Always => true,
            };
            if open {
                run |= 1 << p;
            }
        }
        if run == 0 && inner.patterns.len() <= 64 {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for (p, pattern) in inner.patterns.iter().enumerate() {
            if p < 64 && run & (1 << p) == 0 {
                continue;
            }
            for captures in pattern.regex.captures_iter(text) {
                let Some(m) = captures.get(pattern.group) else {
                    continue;
                };
                let found = m.as_str();
                if found.is_empty() || within_redacted(text, m.start()) {
                    continue;
                }
                if !passes(pattern.check, found) {
                    continue;
                }
                hits.push(Hit {
                    rule: pattern.rule,
                    range: m.range(),
                });
            }
        }
        hits.sort_by(|a, b| {
            a.range
                .start
                .cmp(&b.range.start)
                .then(b.range.end.cmp(&a.range.end))
        });
        let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
        for hit in hits {
            if kept
                .last()
                .is_none_or(|last| hit.range.start >= last.range.end)
            {
                kept.push(hit);
            }
        }
        kept
    }

    /// What replaces `secret` found by rule `rule`.
    fn replacement(&self, rule: usize, secret: &[u8]) -> String {
        match &self.inner.writer {
            Writer::Mask => format!("[REDACTED:{}]", self.inner.names[rule]),
            Writer::Hash(key) => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes a key of any length");
                mac.update(secret);
                let digest = mac.finalize().into_bytes();
                format!("hash:{}", hex::encode(&digest[..8]))
            }
        }
    }

    /// Redacts the secrets found in `text`; returns how many per rule into `counts`.
    fn text(&self, text: &mut String, counts: &mut [u64]) {
        let hits = self.find(text);
        if hits.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len());
        let mut from = 0;
        for hit in &hits {
            out.push_str(&text[from..hit.range.start]);
            out.push_str(&self.replacement(hit.rule, text[hit.range.clone()].as_bytes()));
            from = hit.range.end;
            counts[hit.rule] += 1;
        }
        out.push_str(&text[from..]);
        *text = out;
    }

    /// The value of a sensitive key, replaced whole when it can hold a secret.
    fn whole(&self, value: &mut AnyValue, counts: &mut [u64]) {
        let Some(rule) = self.inner.keys_rule else {
            return;
        };
        let secret = match &value.value {
            Some(Any::StringValue(s)) if !s.is_empty() && !is_redacted(s) => s.as_bytes().to_vec(),
            Some(Any::BytesValue(b)) if !b.is_empty() => b.clone(),
            Some(Any::ArrayValue(_) | Any::KvlistValue(_)) => value.encode_to_vec(),
            _ => return,
        };
        value.value = Some(Any::StringValue(self.replacement(rule, &secret)));
        counts[rule] += 1;
    }

    /// A URL's query parameters under sensitive keys and its user info's password.
    fn url(&self, text: &mut String, query_only: bool, counts: &mut [u64]) {
        let Some(rule) = self.inner.keys_rule else {
            return;
        };
        let mut spans: Vec<Range<usize>> = Vec::new();
        let query_start = if query_only {
            Some(0)
        } else {
            // user info: scheme://user:password@host
            if let Some(scheme_end) = text.find("://") {
                let rest = scheme_end + 3;
                let authority_end = text[rest..]
                    .find(['/', '?', '#'])
                    .map_or(text.len(), |i| rest + i);
                if let Some(at) = text[rest..authority_end].rfind('@') {
                    let userinfo = &text[rest..rest + at];
                    if let Some(colon) = userinfo.find(':') {
                        let password = rest + colon + 1..rest + at;
                        if !password.is_empty() && !is_redacted(&text[password.clone()]) {
                            spans.push(password);
                        }
                    }
                }
            }
            text.find('?').map(|i| i + 1)
        };
        if let Some(start) = query_start {
            let end = text[start..].find('#').map_or(text.len(), |i| start + i);
            let mut at = start;
            for pair in text[start..end].split('&') {
                if let Some(eq) = pair.find('=') {
                    let value = at + eq + 1..at + pair.len();
                    if !value.is_empty()
                        && self.is_sensitive_key(&pair[..eq])
                        && !is_redacted(&text[value.clone()])
                    {
                        spans.push(value);
                    }
                }
                at += pair.len() + 1;
            }
        }
        if spans.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len());
        let mut from = 0;
        for span in &spans {
            out.push_str(&text[from..span.start]);
            out.push_str(&self.replacement(rule, text[span.clone()].as_bytes()));
            from = span.end;
            counts[rule] += 1;
        }
        out.push_str(&text[from..]);
        *text = out;
    }

    fn value(&self, value: &mut AnyValue, counts: &mut [u64]) {
        match &mut value.value {
            Some(Any::StringValue(s)) => self.text(s, counts),
            Some(Any::ArrayValue(array)) => {
                for v in &mut array.values {
                    self.value(v, counts);
                }
            }
            Some(Any::KvlistValue(list)) => self.attributes(&mut list.values, counts),
            _ => {}
        }
    }

    fn attributes(&self, attributes: &mut [KeyValue], counts: &mut [u64]) {
        for kv in attributes.iter_mut() {
            let Some(value) = &mut kv.value else { continue };
            if self.is_sensitive_key(&kv.key) {
                self.whole(value, counts);
                continue;
            }
            if let Some(Any::StringValue(s)) = &mut value.value
                && URL_KEYS.contains(&kv.key.as_str())
            {
                self.url(s, kv.key == "url.query", counts);
            }
            self.value(value, counts);
        }
    }

    fn tally<'a>(&'a self, resource: Option<&Resource>, out: &'a mut Redactions) -> Tally<'a> {
        Tally {
            names: &self.inner.names,
            service: service_of(resource),
            counts: vec![0; self.inner.names.len()],
            out,
        }
    }

    /// Redacts a traces request: resource and scope attributes, span names, attributes, status
    /// messages, events (names and attributes: exception messages and stack traces) and links.
    pub fn traces(&self, request: &mut ExportTraceServiceRequest) -> Redactions {
        let mut out = Redactions::default();
        if self.is_off() {
            return out;
        }
        for resource_spans in &mut request.resource_spans {
            let mut tally = self.tally(resource_spans.resource.as_ref(), &mut out);
            let counts = &mut tally.counts;
            if let Some(resource) = &mut resource_spans.resource {
                self.attributes(&mut resource.attributes, counts);
            }
            for scope_spans in &mut resource_spans.scope_spans {
                if let Some(scope) = &mut scope_spans.scope {
                    self.attributes(&mut scope.attributes, counts);
                }
                for span in &mut scope_spans.spans {
                    self.text(&mut span.name, counts);
                    self.attributes(&mut span.attributes, counts);
                    if let Some(status) = &mut span.status {
                        self.text(&mut status.message, counts);
                    }
                    for event in &mut span.events {
                        self.text(&mut event.name, counts);
                        self.attributes(&mut event.attributes, counts);
                    }
                    for link in &mut span.links {
                        self.attributes(&mut link.attributes, counts);
                    }
                }
            }
            tally.flush();
        }
        out
    }

    /// Redacts a logs request: resource and scope attributes, bodies (text, and the keys and
    /// values of structured bodies), attributes and event names.
    pub fn logs(&self, request: &mut ExportLogsServiceRequest) -> Redactions {
        let mut out = Redactions::default();
        if self.is_off() {
            return out;
        }
        for resource_logs in &mut request.resource_logs {
            let mut tally = self.tally(resource_logs.resource.as_ref(), &mut out);
            let counts = &mut tally.counts;
            if let Some(resource) = &mut resource_logs.resource {
                self.attributes(&mut resource.attributes, counts);
            }
            for scope_logs in &mut resource_logs.scope_logs {
                if let Some(scope) = &mut scope_logs.scope {
                    self.attributes(&mut scope.attributes, counts);
                }
                for record in &mut scope_logs.log_records {
                    if let Some(body) = &mut record.body {
                        self.value(body, counts);
                    }
                    self.attributes(&mut record.attributes, counts);
                    self.text(&mut record.event_name, counts);
                }
            }
            tally.flush();
        }
        out
    }

    /// Redacts a metrics request: resource and scope attributes, data point attributes and
    /// the attributes of exemplars.
    pub fn metrics(&self, request: &mut ExportMetricsServiceRequest) -> Redactions {
        let mut out = Redactions::default();
        if self.is_off() {
            return out;
        }
        for resource_metrics in &mut request.resource_metrics {
            let mut tally = self.tally(resource_metrics.resource.as_ref(), &mut out);
            let counts = &mut tally.counts;
            if let Some(resource) = &mut resource_metrics.resource {
                self.attributes(&mut resource.attributes, counts);
            }
            for scope_metrics in &mut resource_metrics.scope_metrics {
                if let Some(scope) = &mut scope_metrics.scope {
                    self.attributes(&mut scope.attributes, counts);
                }
                for metric in &mut scope_metrics.metrics {
                    macro_rules! points {
                        ($points:expr) => {
                            for point in $points {
                                self.attributes(&mut point.attributes, counts);
                                for exemplar in &mut point.exemplars {
                                    self.attributes(&mut exemplar.filtered_attributes, counts);
                                }
                            }
                        };
                    }
                    match &mut metric.data {
                        Some(Data::Gauge(g)) => points!(&mut g.data_points),
                        Some(Data::Sum(s)) => points!(&mut s.data_points),
                        Some(Data::Histogram(h)) => points!(&mut h.data_points),
                        Some(Data::ExponentialHistogram(h)) => points!(&mut h.data_points),
                        Some(Data::Summary(s)) => {
                            for point in &mut s.data_points {
                                self.attributes(&mut point.attributes, counts);
                            }
                        }
                        None => {}
                    }
                }
            }
            tally.flush();
        }
        out
    }

    /// The secrets still in a stored JSON value (an `attributes` column's object, a structured
    /// body): the key rule on its keys and the patterns on its text, as `(rule, found text)`.
    pub fn find_in_json(&self, value: &serde_json::Value) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        self.json_walk(value, None, &mut found);
        found
    }

    fn json_walk(
        &self,
        value: &serde_json::Value,
        key: Option<&str>,
        found: &mut Vec<(usize, String)>,
    ) {
        use serde_json::Value;
        if let (Some(key), Some(rule)) = (key, self.inner.keys_rule)
            && self.is_sensitive_key(key)
        {
            match value {
                Value::String(s) if !s.is_empty() && !is_redacted(s) => {
                    found.push((rule, s.clone()));
                }
                Value::Array(_) | Value::Object(_) => found.push((rule, value.to_string())),
                _ => {}
            }
            return;
        }
        match value {
            Value::String(s) => {
                // As ingest would: the URL's parameters first, then the patterns on what is left.
                let mut text = s.clone();
                if let (Some(key), Some(rule)) = (key, self.inner.keys_rule)
                    && URL_KEYS.contains(&key)
                {
                    let mut counts = vec![0; self.inner.names.len()];
                    self.url(&mut text, key == "url.query", &mut counts);
                    if counts[rule] > 0 {
                        found.push((rule, s.clone()));
                    }
                }
                for hit in self.find(&text) {
                    found.push((hit.rule, text[hit.range].to_string()));
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.json_walk(item, None, found);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    self.json_walk(v, Some(k), found);
                }
            }
            _ => {}
        }
    }
}

fn passes(check: Check, found: &str) -> bool {
    match check {
        Check::None => true,
        Check::Luhn => luhn(found),
        Check::Credential => {
            found.len() >= 8
                && (found.bytes().any(|b| b.is_ascii_digit())
                    || found.bytes().skip(1).any(|b| b.is_ascii_uppercase())
                    || found.bytes().any(|b| b"._~+/=-".contains(&b)))
        }
        Check::Ipv6 => {
            (found.contains('.') && !found.contains(':'))
                || (found.bytes().any(|b| b.is_ascii_digit())
                    && found.parse::<std::net::Ipv6Addr>().is_ok())
        }
        Check::Phone => (8..=15).contains(&found.bytes().filter(u8::is_ascii_digit).count()),
    }
}

fn memchr(byte: u8, text: &str) -> bool {
    text.as_bytes().contains(&byte)
}

/// True when `digits` start as a card network's numbers do, at one of its lengths (Visa,
/// Mastercard, American Express, Diners Club, JCB, Discover, UnionPay, Maestro): zero-padded ids
/// and counters, which pass the checksum one time in ten, start with 0, 1, 7, 8 or 9.
fn card_network(digits: &[u32]) -> bool {
    let prefix = |n: usize| digits[..n].iter().fold(0u32, |acc, d| acc * 10 + d);
    let len = digits.len();
    match digits[0] {
        4 => matches!(len, 13 | 16 | 19),
        5 => match prefix(2) {
            51..=55 => len == 16,
            50 | 56..=59 => (13..=19).contains(&len),
            _ => false,
        },
        2 => (2221..=2720).contains(&prefix(4)) && len == 16,
        3 => match prefix(2) {
            34 | 37 => len == 15,
            30 | 36 | 38 | 39 => (14..=19).contains(&len),
            35 => (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len),
            _ => false,
        },
        6 => (16..=19).contains(&len),
        _ => false,
    }
}

/// True when the digits of `text` are 13 to 19, begin as a card network's do, and pass the Luhn
/// checksum.
pub fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len())
        || digits.iter().all(|&d| d == digits[0])
        || !card_network(&digits)
    {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Masks a found secret for showing it as an example: its first and last two characters
/// around `…` when it is long enough, else only `…`.
pub fn masked_example(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 10 {
        return "…".to_string();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail} ({} characters)", chars.len())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

    use super::*;

    fn text(s: &str) -> AnyValue {
        AnyValue {
            value: Some(Any::StringValue(s.into())),
        }
    }

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(value),
            ..Default::default()
        }
    }

    fn string_of(value: &Option<AnyValue>) -> &str {
        match value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(s)) => s,
            other => panic!("not text: {other:?}"),
        }
    }

    fn with(config: RedactionConfig) -> Redactor {
        config.compile(None).expect("valid")
    }

    fn all_rules() -> Redactor {
        with(RedactionConfig {
            rules: BUILT_IN.iter().map(|r| r.to_string()).collect(),
            ..RedactionConfig::default()
        })
    }

    /// `text` with every secret the redactor finds replaced.
    fn redacted(r: &Redactor, input: &str) -> String {
        let mut s = input.to_string();
        r.text(&mut s, &mut vec![0; r.rule_names().len()]);
        s
    }

    #[test]
    fn card_numbers_pass_luhn_and_order_ids_do_not() {
        let r = Redactor::default();
        assert_eq!(
            redacted(&r, "paid with 4111 1111 1111 1111 today"),
            "paid with [REDACTED:card_numbers] today"
        );
        assert_eq!(
            redacted(&r, "card=5500-0000-0000-0004"),
            "card=[REDACTED:card_numbers]"
        );
        assert_eq!(
            redacted(&r, "amex 378282246310005."),
            "amex [REDACTED:card_numbers]."
        );
        // Order ids and timestamps of card-like length fail the checksum, or have too many digits.
        for kept in [
            "order 4111111111111112 shipped",
            // Zero-padded ids pass the checksum one time in ten; no card network starts with 0.
            "crashloop-0000000004000006",
            "id 1000000000000008",
            "at 1733212345678901234567",
            "trace 1234567890123",
            "0000000000000000",
        ] {
            assert_eq!(redacted(&r, kept), kept, "{kept}");
        }
        assert!(luhn("4242424242424242") && !luhn("4242424242424241"));
    }

    #[test]
    fn tokens_and_keys_of_known_shapes_are_found_inside_text() {
        let r = Redactor::default();
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            redacted(&r, &format!("token {jwt} expired")),
            "token [REDACTED:jwt] expired"
        );
        assert_eq!(
            redacted(&r, "Authorization header was Bearer abc123DEF456ghi789"),
            "Authorization header was Bearer [REDACTED:bearer_tokens]"
        );
        assert_eq!(
            redacted(&r, "basic authentication failed"),
            "basic authentication failed"
        );
        for key in [
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
            "xoxb-1234567890-abcdefghij",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        ] {
            assert_eq!(
                redacted(&r, &format!("using {key} now")),
                "using [REDACTED:api_keys] now",
                "{key}"
            );
        }
        assert_eq!(redacted(&r, "sk_live is a prefix"), "sk_live is a prefix");
    }

    #[test]
    fn sensitive_keys_in_text_lose_their_values() {
        let r = Redactor::default();
        assert_eq!(
            redacted(&r, "login failed for bob password=hunter2 from web"),
            "login failed for bob password=[REDACTED:keys] from web"
        );
        assert_eq!(
            redacted(&r, r#"{"user": "bob", "api_key": "k-123 456"}"#),
            r#"{"user": "bob", "api_key": [REDACTED:keys]}"#
        );
        assert_eq!(
            redacted(&r, "Authorization: Bearer abcdefgh12345678"),
            "Authorization: [REDACTED:keys]"
        );
        assert_eq!(redacted(&r, "password reset sent"), "password reset sent");
        // Already redacted: not counted or replaced again.
        let once = redacted(&r, "secret=abc");
        assert_eq!(redacted(&r, &once), once);
    }

    #[test]
    fn opt_in_rules_are_off_by_default() {
        let input = "mail jane.doe+shop@example.com from 10.0.3.7 or fe80::1ff:fe23:4567:890a, call +1 415 555 2671";
        assert_eq!(redacted(&Redactor::default(), input), input);
        assert_eq!(
            redacted(&all_rules(), input),
            "mail [REDACTED:emails] from [REDACTED:ip_addresses] or [REDACTED:ip_addresses], call [REDACTED:phone_numbers]"
        );
        let r = all_rules();
        for kept in [
            "at 10:12:06",
            "std::vec::Vec",
            "on 2026-12-03",
            "version 1.2.3",
        ] {
            assert_eq!(redacted(&r, kept), kept, "{kept}");
        }
    }

    #[test]
    fn custom_patterns_and_hash_mode() {
        let config = RedactionConfig {
            mode: Mode::Hash,
            hash_key: Some("a key of sixteen+ bytes".into()),
            patterns: vec![PatternConfig {
                name: "customer-id".into(),
                regex: "CUST-[0-9]{8}".into(),
            }],
            ..RedactionConfig::default()
        };
        let r = with(config.clone());
        let a = redacted(&r, "for CUST-12345678 and CUST-12345678 and CUST-87654321");
        let parts: Vec<&str> = a.split(" and ").collect();
        assert!(
            parts[0].starts_with("for hash:") && parts[0].len() == "for ".len() + 21,
            "{a}"
        );
        assert_eq!(
            parts[0].trim_start_matches("for "),
            parts[1],
            "equal values hash alike"
        );
        assert_ne!(parts[1], parts[2]);
        assert!(is_redacted(parts[1]));
        // Another key: other hashes, so they cannot be compared across servers without it.
        let other = with(RedactionConfig {
            hash_key: Some("another key, also long".into()),
            ..config
        });
        assert_ne!(redacted(&other, "CUST-12345678"), parts[1]);
    }

    #[test]
    fn config_mistakes_name_their_key() {
        let refused = |config: RedactionConfig, key: &str| {
            let error = config.compile(None).expect_err("refused");
            assert_eq!(error.key, key, "{error}");
        };
        refused(
            RedactionConfig {
                mode: Mode::Hash,
                ..RedactionConfig::default()
            },
            "redaction.hash_key",
        );
        refused(
            RedactionConfig {
                rules: vec!["emails".into(), "ssn".into()],
                ..RedactionConfig::default()
            },
            "redaction.rules",
        );
        refused(
            RedactionConfig {
                patterns: vec![PatternConfig {
                    name: "x".into(),
                    regex: "CUST-[0-9".into(),
                }],
                ..RedactionConfig::default()
            },
            "redaction.patterns[0].regex",
        );
        refused(
            RedactionConfig {
                patterns: vec![PatternConfig {
                    name: "jwt".into(),
                    regex: "x+".into(),
                }],
                ..RedactionConfig::default()
            },
            "redaction.patterns[0].name",
        );
        refused(
            RedactionConfig {
                keys: vec!["password".into(), " ".into()],
                ..RedactionConfig::default()
            },
            "redaction.keys[1]",
        );
        let hashed = RedactionConfig {
            mode: Mode::Hash,
            ..RedactionConfig::default()
        };
        assert!(hashed.compile(Some("from the environment, long")).is_ok());
        assert!(
            RedactionConfig {
                enabled: false,
                ..hashed
            }
            .compile(None)
            .expect("off needs no key")
            .is_off()
        );
    }

    #[test]
    fn a_traces_request_is_redacted_everywhere_and_counted_per_service() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZw";
        let span = Span {
            name: format!("GET /login?jwt={jwt}"),
            attributes: vec![
                kv(
                    "http.request.header.authorization",
                    text("Bearer abcdefgh12345678"),
                ),
                kv(
                    "url.full",
                    text("https://bob:s3cret@shop.example/pay?token=abc&page=2"),
                ),
                kv(
                    "user.password",
                    AnyValue {
                        value: Some(Any::IntValue(1234)),
                    },
                ),
                kv(
                    "gen_ai.usage.input_tokens",
                    AnyValue {
                        value: Some(Any::IntValue(77)),
                    },
                ),
                kv(
                    "request.cookies",
                    AnyValue {
                        value: Some(Any::ArrayValue(ArrayValue {
                            values: vec![text("sid=1"), text("theme=dark")],
                        })),
                    },
                ),
                kv(
                    "payload",
                    AnyValue {
                        value: Some(Any::KvlistValue(KeyValueList {
                            values: vec![
                                kv("card", text("4111-1111-1111-1111")),
                                kv("secret", text("x")),
                            ],
                        })),
                    },
                ),
                kv("http.route", text("/login")),
            ],
            status: Some(Status {
                message: "card 4111111111111111 declined".into(),
                code: 2,
            }),
            events: vec![span::Event {
                name: "exception".into(),
                attributes: vec![
                    kv("exception.message", text("bad password=hunter2")),
                    kv(
                        "exception.stacktrace",
                        text(
                            "File x.py, in login\n  token = 'ghp_0123456789abcdefghijklmnopqrstuvwxyzAB'",
                        ),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", text("shop")),
                        kv("db.password", text("pg-pass")),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let counts = Redactor::default().traces(&mut request);
        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(string_of(&resource.attributes[0].value), "shop");
        assert_eq!(string_of(&resource.attributes[1].value), "[REDACTED:keys]");
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "GET /login?jwt=[REDACTED:jwt]");
        let a = &span.attributes;
        assert_eq!(string_of(&a[0].value), "[REDACTED:keys]");
        assert_eq!(
            string_of(&a[1].value),
            "https://bob:[REDACTED:keys]@shop.example/pay?token=[REDACTED:keys]&page=2"
        );
        assert_eq!(
            a[2].value.as_ref().unwrap().value,
            Some(Any::IntValue(1234))
        );
        assert_eq!(a[3].value.as_ref().unwrap().value, Some(Any::IntValue(77)));
        assert_eq!(string_of(&a[4].value), "[REDACTED:keys]");
        let Some(Any::KvlistValue(payload)) = &a[5].value.as_ref().unwrap().value else {
            panic!("a map stays a map")
        };
        assert_eq!(
            string_of(&payload.values[0].value),
            "[REDACTED:card_numbers]"
        );
        assert_eq!(string_of(&payload.values[1].value), "[REDACTED:keys]");
        assert_eq!(string_of(&a[6].value), "/login");
        assert_eq!(
            span.status.as_ref().unwrap().message,
            "card [REDACTED:card_numbers] declined"
        );
        let event = &span.events[0].attributes;
        assert_eq!(string_of(&event[0].value), "bad password=[REDACTED:keys]");
        assert!(
            !string_of(&event[1].value).contains("ghp_"),
            "{:?}",
            event[1]
        );
        let of = |rule: &str| {
            counts
                .counts
                .get(&("shop".to_string(), Arc::from(rule)))
                .copied()
        };
        // The resource's db.password, the authorization header, the URL's password and token,
        // the cookies, the payload's secret, and password= and token = in the exception.
        assert_eq!(of(KEYS), Some(8), "{counts:?}");
        assert_eq!(of(CARD_NUMBERS), Some(2));
        assert_eq!(of(JWT), Some(1));
        assert_eq!(
            of(API_KEYS),
            None,
            "the stack trace's token went to the keys rule: {counts:?}"
        );
        assert_eq!(counts.total(), 11);
    }

    #[test]
    fn log_bodies_text_and_structured_are_redacted() {
        let mut request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        LogRecord {
                            body: Some(text("charge failed for 4242 4242 4242 4242")),
                            ..Default::default()
                        },
                        LogRecord {
                            body: Some(AnyValue {
                                value: Some(Any::KvlistValue(KeyValueList {
                                    values: vec![
                                        kv("event", text("login")),
                                        kv("session_id", text("abc")),
                                        kv("auth", text("Basic dXNlcjpwYXNz")),
                                    ],
                                })),
                            }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let counts = Redactor::default().logs(&mut request);
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(
            string_of(&records[0].body),
            "charge failed for [REDACTED:card_numbers]"
        );
        let Some(Any::KvlistValue(body)) = &records[1].body.as_ref().unwrap().value else {
            panic!("a map")
        };
        assert_eq!(string_of(&body.values[0].value), "login");
        assert_eq!(string_of(&body.values[1].value), "[REDACTED:keys]");
        assert_eq!(
            string_of(&body.values[2].value),
            "Basic [REDACTED:bearer_tokens]"
        );
        assert_eq!(counts.total(), 3);
        assert!(
            counts
                .counts
                .keys()
                .all(|(service, _)| service == "unknown_service")
        );
    }

    #[test]
    fn stored_json_is_scanned_with_keys_and_patterns() {
        let r = Redactor::default();
        let value: serde_json::Value = serde_json::from_str(
            r#"{"password": "hunter2", "note": "card 4111 1111 1111 1111", "ok": "[REDACTED:keys]",
                "token": "[REDACTED:keys]", "url.full": "https://x.example/?api_key=k1", "n": 5}"#,
        )
        .unwrap();
        let mut found: Vec<(String, String)> = r
            .find_in_json(&value)
            .into_iter()
            .map(|(rule, s)| (r.rule_names()[rule].to_string(), s))
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("card_numbers".into(), "4111 1111 1111 1111".into()),
                ("keys".into(), "https://x.example/?api_key=k1".into()),
                ("keys".into(), "hunter2".into()),
            ]
        );
        assert_eq!(
            masked_example("4111 1111 1111 1111"),
            "41…11 (19 characters)"
        );
        assert_eq!(masked_example("hunter2"), "…");
    }
}
