//! One HTTP attempt at delivering a notification, and what its outcome means: delivered (2xx),
//! worth another attempt (5xx, 429, no answer in time, the receiver unreachable) or refused for
//! good (any other answer); and the backoff between attempts. Messages never hold the URL:
//! a Slack webhook's URL is its secret.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::HeaderMap;

/// How long one attempt may take, connection included.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait after the first failed attempt; it doubles with every further failure.
pub(crate) const FIRST_BACKOFF_NS: i64 = 1_000_000_000;

/// How much of a refusing receiver's answer a message quotes.
const ANSWER_CHARS: usize = 200;

/// Why an attempt failed, and whether another one can succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) retryable: bool,
    pub(crate) message: String,
}

/// The client every attempt goes through: the attempt timeout, no redirects (a webhook that
/// moved should be configured where it is now; following a redirect would turn the POST into
/// a GET), Sightline's user agent.
pub(crate) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Sightline/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Posts `body` to `url` once with `headers` (which carry the content type).
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: String,
) -> Result<(), Failure> {
    let response = match client.post(url).headers(headers).body(body).send().await {
        Ok(response) => response,
        Err(err) => return Err(unanswered(err)),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let answer = response.text().await.unwrap_or_default();
    Err(refused(status, &answer))
}

/// A request that got no answer: always worth another attempt.
fn unanswered(err: reqwest::Error) -> Failure {
    if err.is_timeout() {
        return Failure {
            retryable: true,
            message: format!(
                "no answer within {}s; retrying with backoff",
                ATTEMPT_TIMEOUT.as_secs()
            ),
        };
    }
    let err = err.without_url();
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    Failure {
        retryable: true,
        message: format!("could not reach the receiver ({reason}); retrying with backoff"),
    }
}

/// An answer other than 2xx.
pub(crate) fn refused(status: reqwest::StatusCode, answer: &str) -> Failure {
    let answer = answer.trim();
    let quoted = if answer.is_empty() {
        String::new()
    } else {
        format!(": {}", super::payload::cut(answer, ANSWER_CHARS))
    };
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Failure {
            retryable: true,
            message: format!("the receiver answered {status}{quoted}; retrying with backoff"),
        }
    } else if status.is_redirection() {
        Failure {
            retryable: false,
            message: format!(
                "the receiver answered {status}{quoted}, a redirect, which is not followed; not retried: set the target's url to the address it points to"
            ),
        }
    } else {
        Failure {
            retryable: false,
            message: format!(
                "the receiver answered {status}{quoted} and would refuse it again; not retried: check the target's url and headers"
            ),
        }
    }
}

/// The wait after `failed_attempts` failures: 1 s, 2 s, 4 s … never above `cap_ns` (the
/// group's interval, after which a newer notification replaces this one anyway).
pub(crate) fn backoff_ns(failed_attempts: u32, cap_ns: i64) -> i64 {
    let doublings = failed_attempts.saturating_sub(1).min(40);
    FIRST_BACKOFF_NS
        .saturating_mul(1_i64 << doublings)
        .min(cap_ns)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn server_errors_and_throttling_are_retried_other_refusals_are_not() {
        for (code, retryable) in [
            (500, true),
            (502, true),
            (503, true),
            (429, true),
            (400, false),
            (401, false),
            (404, false),
            (410, false),
            (301, false),
        ] {
            let status = StatusCode::from_u16(code).expect("a status");
            let failure = refused(status, " invalid_payload\n");
            assert_eq!(failure.retryable, retryable, "{code}: {}", failure.message);
            assert!(
                failure.message.contains(&code.to_string()),
                "{}",
                failure.message
            );
            assert!(
                failure.message.contains(": invalid_payload"),
                "{}",
                failure.message
            );
            let says = if retryable { "retrying" } else { "not retried" };
            assert!(failure.message.contains(says), "{}", failure.message);
        }
    }

    #[test]
    fn backoff_doubles_from_a_second_up_to_the_cap() {
        let cap = 300 * FIRST_BACKOFF_NS;
        let waits: Vec<i64> = (1..=10)
            .map(|n| backoff_ns(n, cap) / FIRST_BACKOFF_NS)
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff_ns(u32::MAX, cap), cap);
        assert_eq!(backoff_ns(1, 0), 0);
    }
}
