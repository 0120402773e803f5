//! Readiness polling: HTTP probes against a deadline, failing fast when the container exits.
//! Each probe goes where [`crate::reach`] says this process can reach the URL (the URL itself on
//! the engine's host; the deployment's own address from a sibling container).

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

/// Connect timeout of one probe.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Upper bound of one probe's overall timeout.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lower bound of one probe's overall timeout, so the probe made at the deadline can answer.
const PROBE_TIMEOUT_FLOOR: Duration = Duration::from_millis(50);
/// Longest body excerpt kept in a "not ready" reason.
const BODY_EXCERPT: usize = 120;

/// How long a successful wait took.
#[derive(Debug, Clone)]
pub(crate) struct Waited {
    pub elapsed: Duration,
    /// Probes made, the successful one included.
    pub attempts: u32,
}

/// Why the service never became ready.
#[derive(Debug)]
pub(crate) enum HealthError {
    /// The deadline passed; `last` is the last status code or connection error, one line.
    /// `via` names where the probes went when that was not `url` itself.
    Timeout {
        url: String,
        via: Option<String>,
        waited: Duration,
        last: String,
    },
    /// Nothing can reach the URL from where this process runs (found within one probe).
    Unreachable { reason: String },
    /// The container stopped while waiting (the caller adds its logs).
    Exited { code: Option<i64>, waited: Duration },
}

impl fmt::Display for HealthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthError::Timeout {
                url,
                via,
                waited,
                last,
            } => {
                let via = via
                    .as_deref()
                    .map_or(String::new(), |v| format!(" (probed at {v})"));
                write!(
                    f,
                    "{url}{via} did not answer 2xx within {:.1}s (last: {last}); check the container logs or allow a longer wait",
                    waited.as_secs_f64()
                )
            }
            HealthError::Unreachable { reason, .. } => f.write_str(reason),
            HealthError::Exited {
                code: Some(code),
                waited,
            } => write!(
                f,
                "container exited with code {code} after {:.1}s while waiting to become ready",
                waited.as_secs_f64()
            ),
            HealthError::Exited { code: None, waited } => write!(
                f,
                "container stopped (exit code unknown) after {:.1}s while waiting to become ready",
                waited.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for HealthError {}

/// Polls `GET url` every `interval` until it answers 2xx or `deadline` passes.
///
/// Each probe has a short timeout (connect [`CONNECT_TIMEOUT`], overall
/// min(time to deadline, [`PROBE_TIMEOUT`])); at least one probe is made even if the deadline
/// has already passed. Between probes it calls `exited()`, which returns `Some(exit_code)` once
/// the container has stopped (`None` = still running); it is called at most every
/// `check_every`, and always once right before giving up with [`HealthError::Timeout`]. The
/// sleep between probes is min(`interval`, time to deadline), so the deadline is overshot by
/// at most one probe timeout.
pub(crate) fn wait_http_ok(
    url: &str,
    deadline: Instant,
    interval: Duration,
    check_every: Duration,
    exited: &mut dyn FnMut() -> Option<Option<i64>>,
) -> Result<Waited, HealthError> {
    let start = Instant::now();
    let agent = agent();
    let mut attempts = 0u32;
    let mut last_check: Option<Instant> = None;
    let mut via = None;
    loop {
        attempts += 1;
        let timeout = probe_timeout(deadline);
        let route = crate::reach::route(url);
        if let Some(n) = route.note() {
            via = Some(n.to_string());
        }
        let last = match probe_routed(&agent, url, &route, timeout) {
            Ok((status, _)) if (200..300).contains(&status) => {
                return Ok(Waited {
                    elapsed: start.elapsed(),
                    attempts,
                });
            }
            Ok((status, body)) => not_ready(status, &body),
            Err(Failure {
                reason,
                fatal: true,
            }) => return Err(HealthError::Unreachable { reason }),
            Err(Failure { reason, .. }) => reason,
        };

        let now = Instant::now();
        if now >= deadline {
            if let Some(code) = exited() {
                return Err(HealthError::Exited {
                    code,
                    waited: start.elapsed(),
                });
            }
            return Err(HealthError::Timeout {
                url: url.to_string(),
                via,
                waited: start.elapsed(),
                last,
            });
        }
        if last_check.is_none_or(|at| now.duration_since(at) >= check_every) {
            last_check = Some(now);
            if let Some(code) = exited() {
                return Err(HealthError::Exited {
                    code,
                    waited: start.elapsed(),
                });
            }
        }
        thread::sleep(interval.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// One GET with `timeout` overall (connect at most [`CONNECT_TIMEOUT`]): `Ok((status, body))`
/// for any HTTP status, `Err(one-line reason)` for connection and protocol errors.
pub(crate) fn probe(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT.min(timeout))
        .build();
    probe_routed(&agent, url, &crate::reach::route(url), timeout).map_err(|f| f.reason)
}

/// Why a probe got no HTTP answer; `fatal` when no retry can change that.
struct Failure {
    reason: String,
    fatal: bool,
}

/// One GET of `url` the way `route` says it is reached.
fn probe_routed(
    agent: &ureq::Agent,
    url: &str,
    route: &crate::reach::Route,
    timeout: Duration,
) -> Result<(u16, String), Failure> {
    use crate::reach::Route;
    let soft = |reason: String| Failure {
        reason,
        fatal: false,
    };
    match route {
        Route::Direct => probe_with(agent, url, timeout).map_err(soft),
        Route::Via { url: at, .. } => probe_with(agent, at, timeout).map_err(soft),
        Route::NotPublished(why) => Err(soft(why.clone())),
        Route::Exec {
            target,
            url: inside,
            ..
        } => crate::reach::exec_probe(target, inside, url, timeout)
            .map_err(|(reason, fatal)| Failure { reason, fatal }),
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(PROBE_TIMEOUT)
        .build()
}

fn probe_timeout(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .clamp(PROBE_TIMEOUT_FLOOR, PROBE_TIMEOUT)
}

fn probe_with(agent: &ureq::Agent, url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let response = match agent.get(url).timeout(timeout).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(transport)) => return Err(one_line(&transport.to_string())),
    };
    let status = response.status();
    // A status without a readable body still answers the question "is it up?".
    let body = response.into_string().unwrap_or_default();
    Ok((status, body))
}

fn not_ready(status: u16, body: &str) -> String {
    let body = one_line(body.trim());
    if body.is_empty() {
        format!("HTTP {status}")
    } else if body.chars().count() > BODY_EXCERPT {
        let cut: String = body.chars().take(BODY_EXCERPT).collect();
        format!("HTTP {status}: {cut}...")
    } else {
        format!("HTTP {status}: {body}")
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A local HTTP server answering every request with `respond(n)` (n counts from 1).
    /// It runs until the test process ends; each test gets its own port.
    struct TestServer {
        url: String,
        requests: Arc<AtomicU32>,
    }

    impl TestServer {
        fn start(respond: impl Fn(u32) -> (u16, &'static str) + Send + 'static) -> TestServer {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            Self::serve(listener, respond)
        }

        fn serve(
            listener: TcpListener,
            respond: impl Fn(u32) -> (u16, &'static str) + Send + 'static,
        ) -> TestServer {
            let port = listener.local_addr().unwrap().port();
            let requests = Arc::new(AtomicU32::new(0));
            let counter = requests.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let (status, body) = respond(n);
                    answer(stream, status, body);
                }
            });
            TestServer {
                url: format!("http://127.0.0.1:{port}/health"),
                requests,
            }
        }
    }

    fn answer(stream: TcpStream, status: u16, body: &str) {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        // Read the request head; GET has no body.
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line == "\r\n" {
                break;
            }
            line.clear();
        }
        let mut stream = reader.into_inner();
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    /// A URL on which nothing listens (a port just released by the OS).
    fn dead_url() -> String {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/health")
    }

    fn running() -> impl FnMut() -> Option<Option<i64>> {
        || None
    }

    const INTERVAL: Duration = Duration::from_millis(20);

    #[test]
    fn ready_immediately() {
        let server = TestServer::start(|_| (200, r#"{"status":"healthy"}"#));
        let deadline = Instant::now() + Duration::from_secs(5);
        let waited =
            wait_http_ok(&server.url, deadline, INTERVAL, INTERVAL, &mut running()).expect("ready");
        assert_eq!(waited.attempts, 1);
        assert!(waited.elapsed < Duration::from_secs(2));
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn not_ready_until_third_request() {
        let server = TestServer::start(|n| {
            if n < 3 {
                (503, "starting")
            } else {
                (200, "ok")
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let waited =
            wait_http_ok(&server.url, deadline, INTERVAL, INTERVAL, &mut running()).expect("ready");
        assert_eq!(waited.attempts, 3);
        assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn status_errors_are_reported_as_last() {
        let server = TestServer::start(|_| (503, "{\"status\":\n\"starting\"}"));
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut checks = 0;
        let mut exited = || {
            checks += 1;
            None
        };
        let err = wait_http_ok(&server.url, deadline, INTERVAL, INTERVAL, &mut exited)
            .expect_err("never ready");
        match &err {
            HealthError::Timeout { last, url, .. } => {
                assert_eq!(last, "HTTP 503: {\"status\": \"starting\"}");
                assert_eq!(url, &server.url);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(checks >= 2, "exited() called {checks} times");
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn never_listening_times_out_near_the_deadline() {
        let url = dead_url();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let mut checks = 0;
        let mut exited = || {
            checks += 1;
            None
        };
        // check_every longer than the whole wait: only the first and the final check happen.
        let err = wait_http_ok(
            &url,
            deadline,
            INTERVAL,
            Duration::from_secs(60),
            &mut exited,
        )
        .expect_err("nothing listens");
        let took = start.elapsed();
        match err {
            HealthError::Timeout { last, waited, .. } => {
                assert!(!last.is_empty() && !last.contains('\n'), "{last:?}");
                assert!(
                    last.to_lowercase().contains("connect"),
                    "last should name the connection failure: {last}"
                );
                assert!(waited >= Duration::from_millis(300), "{waited:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(300) + CONNECT_TIMEOUT + Duration::from_millis(200));
        assert_eq!(checks, 2);
    }

    #[test]
    fn exit_fails_fast_with_its_code() {
        let url = dead_url();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut exited = || Some(Some(3));
        let err = wait_http_ok(
            &url,
            deadline,
            INTERVAL,
            Duration::from_millis(100),
            &mut exited,
        )
        .expect_err("exited");
        assert!(
            matches!(err, HealthError::Exited { code: Some(3), .. }),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(err.to_string().contains("code 3"));
    }

    #[test]
    fn exit_is_noticed_after_a_few_checks() {
        let url = dead_url();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut checks = 0;
        let mut exited = || {
            checks += 1;
            (checks >= 3).then_some(None)
        };
        let err = wait_http_ok(&url, deadline, INTERVAL, Duration::ZERO, &mut exited)
            .expect_err("exited");
        assert!(
            matches!(err, HealthError::Exited { code: None, .. }),
            "{err:?}"
        );
        assert_eq!(checks, 3);
    }

    #[test]
    fn exit_found_at_the_deadline_beats_timeout() {
        let url = dead_url();
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut checks = 0;
        let mut exited = || {
            checks += 1;
            (checks >= 2).then_some(Some(137))
        };
        let err = wait_http_ok(
            &url,
            deadline,
            INTERVAL,
            Duration::from_secs(60),
            &mut exited,
        )
        .expect_err("exited");
        assert!(
            matches!(
                err,
                HealthError::Exited {
                    code: Some(137),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn server_that_starts_late_is_waited_for() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        // The service "boots" while the wait runs: it starts listening only at the third
        // container check, so the probes before it must fail and the wait must go on.
        let mut checks = 0;
        let mut server = None;
        let mut boot_late = || {
            checks += 1;
            if checks == 3 {
                let listener = TcpListener::bind(addr).unwrap();
                server = Some(TestServer::serve(listener, |_| (200, "ok")));
            }
            None
        };
        let url = format!("http://{addr}/health");
        let deadline = Instant::now() + Duration::from_secs(5);
        let waited = wait_http_ok(&url, deadline, INTERVAL, INTERVAL, &mut boot_late)
            .expect("ready once listening");
        assert!(waited.attempts >= 4, "{waited:?}");
        assert_eq!(checks, 3, "no more checks once it answered");
    }

    #[test]
    fn probe_returns_any_status_and_body() {
        let server = TestServer::start(|n| if n == 1 { (404, "nope") } else { (200, "yes") });
        assert_eq!(
            probe(&server.url, Duration::from_secs(2)),
            Ok((404, "nope".to_string()))
        );
        assert_eq!(
            probe(&server.url, Duration::from_secs(2)),
            Ok((200, "yes".to_string()))
        );
    }

    #[test]
    fn probe_connection_error_is_one_line() {
        let reason = probe(&dead_url(), Duration::from_millis(500)).unwrap_err();
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
    }

    #[test]
    fn slow_answer_hits_the_probe_timeout() {
        // Accepts connections but never answers.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let start = Instant::now();
        let reason = probe(&url, Duration::from_millis(200)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1), "{reason}");
        drop(listener);
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "x".repeat(500);
        let text = not_ready(500, &long);
        assert!(text.starts_with("HTTP 500: xxx"));
        assert!(text.ends_with("..."));
        assert!(text.len() < 200);
        assert_eq!(not_ready(502, "  "), "HTTP 502");
    }
}
