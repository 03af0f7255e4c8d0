//! A local AWS Lambda Runtime API: a test pushes events, a real Lambda process (any runtime
//! client) fetches them from `/2018-06-01/runtime/invocation/next` and posts its answer, and the
//! test awaits that answer.
//!
//! It speaks HTTP/1.1 with Content-Length and sets TCP_NODELAY: without it every answer stalls
//! ~40 ms (Nagle plus delayed ACK), which would swamp any measurement made through it.
//!
//! ```no_run
//! use symroute_testbed::runtime_api::RuntimeApi;
//! let api = RuntimeApi::start()?;
//! let mut lambda = std::process::Command::new("bootstrap").envs(api.lambda_env()).spawn()?;
//! let id = api.push(&serde_json::json!({"hello": "world"}));
//! let answer = api.wait(&id, std::time::Duration::from_secs(30))?;
//! assert!(answer.is_ok(), "{}", answer.text());
//! # lambda.kill()?; Ok::<(), symroute_testbed::Error>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::moto::background_runtime;

const PREFIX: &str = "/2018-06-01/runtime";
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:symroute";
/// What Lambda tells the function about its deadline; generous, tests bound their own waits.
const DEADLINE: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Posted to `/invocation/{id}/response`.
    Response,
    /// Posted to `/invocation/{id}/error`, with `Lambda-Runtime-Function-Error-Type` if given.
    Error { error_type: Option<String> },
    /// Posted to `/init/error`: the function failed before taking any event.
    InitError { error_type: Option<String> },
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub request_id: String,
    pub outcome: Outcome,
    pub body: Vec<u8>,
    /// When the answer arrived (for cold-start and latency measurements).
    pub at: Instant,
}

impl Answer {
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Response
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `errorMessage` of an error answer, or the whole body.
    pub fn error_message(&self) -> String {
        match self.json().get("errorMessage").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None => self.text(),
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<(String, Bytes)>,
    answers: HashMap<String, Answer>,
    init_error: Option<Answer>,
    next_id: u64,
    delivered: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    answered: Condvar,
    pushed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct RuntimeApi {
    port: u16,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl RuntimeApi {
    /// Listens on a free loopback port.
    pub fn start() -> Result<Self> {
        let rt = background_runtime()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let server = shared.clone();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let shared = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(route(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RuntimeApi {
            port,
            shared,
            rt: Some(rt),
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (host:port, no scheme).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What Lambda sets for every function process, pointing at this server.
    pub fn lambda_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address()),
            ("AWS_LAMBDA_FUNCTION_NAME", "symroute".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/symroute".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local".into()),
        ]
    }

    /// Queues an event; returns its request id.
    pub fn push(&self, event: &serde_json::Value) -> String {
        self.push_raw(event.to_string())
    }

    /// Queues any payload, JSON or not.
    pub fn push_raw(&self, payload: impl Into<Vec<u8>>) -> String {
        let id = {
            let mut s = self.shared.lock();
            s.next_id += 1;
            let id = format!("00000000-0000-4000-8000-{:012}", s.next_id);
            s.queue.push_back((id.clone(), Bytes::from(payload.into())));
            id
        };
        self.shared.pushed.notify_waiters();
        id
    }

    /// Waits for the answer to `request_id`. An init error counts as the answer to every event.
    pub fn wait(&self, request_id: &str, timeout: Duration) -> Result<Answer> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        loop {
            if let Some(a) = s.answers.get(request_id) {
                return Ok(a.clone());
            }
            if let Some(a) = &s.init_error {
                return Ok(a.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("the Lambda's answer to request {request_id}"),
                    secs: timeout.as_secs(),
                });
            }
            s = self
                .shared
                .answered
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the answers to all `ids`, in their order, within one overall `timeout`.
    pub fn wait_all(&self, ids: &[String], timeout: Duration) -> Result<Vec<Answer>> {
        let deadline = Instant::now() + timeout;
        ids.iter()
            .map(|id| self.wait(id, deadline.saturating_duration_since(Instant::now())))
            .collect()
    }

    pub fn init_error(&self) -> Option<Answer> {
        self.shared.lock().init_error.clone()
    }

    /// How many events have been handed to a function so far.
    pub fn delivered(&self) -> u64 {
        self.shared.lock().delivered
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return plain(StatusCode::NOT_FOUND, "unknown path");
    };
    match (req.method().clone(), rest) {
        (Method::GET, "/invocation/next") => next(shared).await,
        (Method::POST, "/init/error") => {
            let error_type = error_type(&req);
            let body = body(req).await;
            shared.lock().init_error = Some(Answer {
                request_id: String::new(),
                outcome: Outcome::InitError { error_type },
                body,
                at: Instant::now(),
            });
            shared.answered.notify_all();
            accepted()
        }
        (Method::POST, rest) => {
            let Some((id, kind)) = rest
                .strip_prefix("/invocation/")
                .and_then(|r| r.rsplit_once('/'))
            else {
                return plain(StatusCode::NOT_FOUND, "unknown path");
            };
            let outcome = match kind {
                "response" => Outcome::Response,
                "error" => Outcome::Error {
                    error_type: error_type(&req),
                },
                _ => return plain(StatusCode::NOT_FOUND, "unknown path"),
            };
            let id = id.to_string();
            let body = body(req).await;
            let mut s = shared.lock();
            if s.answers.contains_key(&id) {
                // Lambda refuses a second answer to one invocation; so does this server.
                return plain(StatusCode::BAD_REQUEST, "already answered");
            }
            s.answers.insert(
                id.clone(),
                Answer {
                    request_id: id,
                    outcome,
                    body,
                    at: Instant::now(),
                },
            );
            drop(s);
            shared.answered.notify_all();
            accepted()
        }
        _ => plain(StatusCode::NOT_FOUND, "unknown path"),
    }
}

/// Long-polls until an event is queued, as Lambda does.
async fn next(shared: &Shared) -> Response<Full<Bytes>> {
    let (id, payload) = loop {
        let pushed = shared.pushed.notified();
        tokio::pin!(pushed);
        // Registered before looking at the queue, so a push in between is not missed.
        pushed.as_mut().enable();
        if let Some(item) = {
            let mut s = shared.lock();
            let item = s.queue.pop_front();
            if item.is_some() {
                s.delivered += 1;
            }
            item
        } {
            break item;
        }
        pushed.await;
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(DEADLINE)
        .as_millis();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", &id)
        .header("lambda-runtime-deadline-ms", deadline.to_string())
        .header("lambda-runtime-invoked-function-arn", FUNCTION_ARN)
        .header(
            "lambda-runtime-trace-id",
            format!("Root=1-00000000-{}", &id[24..]),
        )
        .body(Full::new(payload))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad event"))
}

fn error_type(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn body(req: Request<Incoming>) -> Vec<u8> {
    match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => format!("(body unreadable: {e})").into_bytes(),
    }
}

fn accepted() -> Response<Full<Bytes>> {
    plain(StatusCode::ACCEPTED, "{\"status\":\"OK\"}")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    /// A minimal client on a raw socket: what awslambdaric's C client needs is exactly this.
    fn call(
        stream: &mut BufReader<TcpStream>,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            stream.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').unwrap();
            headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .expect("every answer carries Content-Length");
        let mut body = vec![0; len];
        stream.read_exact(&mut body).unwrap();
        (status, headers, String::from_utf8(body).unwrap())
    }

    #[test]
    fn events_go_out_and_answers_come_back_on_one_keep_alive_connection() {
        let api = RuntimeApi::start().unwrap();
        let first = api.push(&serde_json::json!({"n": 1}));
        let second = api.push_raw("not json");
        let mut s = BufReader::new(TcpStream::connect(api.address()).unwrap());

        let (status, headers, body) =
            call(&mut s, "GET", "/2018-06-01/runtime/invocation/next", "");
        assert_eq!((status, body.as_str()), (200, "{\"n\":1}"));
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(header("lambda-runtime-aws-request-id"), Some(first.clone()));
        assert_eq!(
            header("lambda-runtime-invoked-function-arn").as_deref(),
            Some(FUNCTION_ARN)
        );
        assert!(header("lambda-runtime-deadline-ms")
            .unwrap()
            .parse::<u128>()
            .is_ok());
        let path = format!("/2018-06-01/runtime/invocation/{first}/response");
        assert_eq!(call(&mut s, "POST", &path, "{\"ok\":1}").0, 202);
        assert_eq!(
            call(&mut s, "POST", &path, "{\"ok\":2}").0,
            400,
            "second answer refused"
        );

        let (_, _, body) = call(&mut s, "GET", "/2018-06-01/runtime/invocation/next", "");
        assert_eq!(body, "not json");
        let path = format!("/2018-06-01/runtime/invocation/{second}/error");
        assert_eq!(
            call(&mut s, "POST", &path, "{\"errorMessage\":\"bad\"}").0,
            202
        );

        let a = api.wait(&first, Duration::from_secs(10)).unwrap();
        assert!(a.is_ok());
        assert_eq!(a.json()["ok"], 1);
        let b = api.wait(&second, Duration::from_secs(10)).unwrap();
        assert!(!b.is_ok());
        assert_eq!(b.error_message(), "bad");
        assert_eq!(api.delivered(), 2);
        assert!(matches!(
            api.wait("nope", Duration::from_millis(10)),
            Err(Error::Timeout { .. })
        ));
    }

    #[test]
    fn next_waits_for_a_push_and_init_errors_answer_everything() {
        let api = RuntimeApi::start().unwrap();
        let addr = api.address();
        let poller = std::thread::spawn(move || {
            let mut s = BufReader::new(TcpStream::connect(addr).unwrap());
            call(&mut s, "GET", "/2018-06-01/runtime/invocation/next", "").2
        });
        // The poller is parked in `next` (or not yet connected): either way it gets this event.
        let id = api.push(&serde_json::json!("late"));
        assert_eq!(poller.join().unwrap(), "\"late\"");

        let mut s = BufReader::new(TcpStream::connect(api.address()).unwrap());
        let init = call(
            &mut s,
            "POST",
            "/2018-06-01/runtime/init/error",
            "{\"errorMessage\":\"no config\"}",
        );
        assert_eq!(init.0, 202);
        let a = api.wait(&id, Duration::from_secs(10)).unwrap();
        assert!(matches!(a.outcome, Outcome::InitError { .. }));
        assert_eq!(a.error_message(), "no config");
        assert!(api.init_error().is_some());
    }
}
