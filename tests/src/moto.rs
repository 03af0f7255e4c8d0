//! A real moto server (the local AWS API) behind the strict layer (tests/aws/strict_moto.py: the
//! contracts AWS enforces and moto does not) on a free loopback port, and a fault-injecting proxy
//! to put in front of it.
//!
//! ```no_run
//! let moto = symroute_testbed::moto::MotoServer::start()?;
//! let mut cmd = std::process::Command::new("my-aws-client");
//! cmd.envs(moto.aws_env()); // endpoint, fake credentials, region, IMDS off
//! # Ok::<(), symroute_testbed::Error>(())
//! ```

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::error::{Error, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
pub const REGION: &str = "us-east-1";

/// The venv that `make setup` creates at the repository root (override: `SYMROUTE_VENV`).
pub fn venv() -> PathBuf {
    std::env::var_os("SYMROUTE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"))
}

/// Environment for any AWS client aimed at `endpoint`: fake credentials, a region, and IMDS
/// disabled so nothing ever reaches 169.254.169.254.
pub fn aws_env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_SESSION_TOKEN", "testing".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

pub struct MotoServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl MotoServer {
    /// Starts moto behind the strict layer, from the venv, and waits until it accepts
    /// connections.
    pub fn start() -> Result<Self> {
        let bin = venv().join("bin/python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("aws/strict_moto.py");
        if !venv().join("bin/moto_server").is_file() {
            return Err(Error::invalid(
                "virtualenv",
                venv().display().to_string(),
                "it has no bin/moto_server: run `make setup` (or `make setup-python`) first",
            ));
        }
        let port = free_port()?;
        let log =
            std::env::temp_dir().join(format!("symroute-moto-{}-{port}.log", std::process::id()));
        let out = File::create(&log)?;
        let child = Command::new(&bin)
            .arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: bin.display().to_string(),
                source,
            })?;
        let mut server = MotoServer { child, port, log };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while start.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                return Err(Error::Command {
                    cmd: "moto_server".into(),
                    status: status.to_string(),
                    stderr: self.log_tail(),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Timeout {
            what: format!(
                "moto_server to listen on port {} (log: {})",
                self.port,
                self.log_tail()
            ),
            secs: READY_TIMEOUT.as_secs(),
        })
    }

    /// The last lines moto printed, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        aws_env_for(&self.endpoint())
    }

    /// Registers an instance with Systems Manager, as its SSM Agent would: Online, Linux,
    /// agent 3.3.2746.0.
    pub fn register(&self, instance_id: &str) -> Result<()> {
        self.register_as(instance_id, "Online", "Linux", "3.3.2746.0")
    }

    pub fn register_as(
        &self,
        instance_id: &str,
        ping_status: &str,
        platform_type: &str,
        agent_version: &str,
    ) -> Result<()> {
        let body = serde_json::json!({
            "instance_id": instance_id, "ping_status": ping_status,
            "platform_type": platform_type, "agent_version": agent_version,
        });
        control(self.port, "/_strict/register", &body).map(drop)
    }

    /// What an instance's SSM Agent reports when a command ends: its status and each step's
    /// (name, status, exit code, stdout). Emits the status-change event.
    pub fn report(
        &self,
        command_id: &str,
        instance_id: &str,
        status: &str,
        steps: &[(&str, &str, i32, &str)],
    ) -> Result<()> {
        let steps: Vec<serde_json::Value> = steps
            .iter()
            .map(|(name, status, code, stdout)| {
                serde_json::json!({"name": name, "status": status, "response_code": code,
                                   "stdout": stdout, "stderr": ""})
            })
            .collect();
        let body = serde_json::json!({
            "command_id": command_id, "instance_id": instance_id, "status": status, "steps": steps,
        });
        control(self.port, "/_strict/report", &body).map(drop)
    }

    /// What the strict layer recorded (commands and their true recipients, reports, refusals).
    pub fn state(&self) -> Result<serde_json::Value> {
        control(self.port, "/_strict/state", &serde_json::Value::Null)
    }
}

/// One request to the strict layer's control endpoints (loopback, HTTP/1.1, closed after).
fn control(port: u16, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let payload = body.to_string();
    let method = if body.is_null() { "GET" } else { "POST" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(Error::invalid(
            "strict layer",
            path.to_string(),
            answer.clone(),
        ));
    }
    serde_json::from_str(body)
        .map_err(|e| Error::invalid("strict layer", path.to_string(), e.to_string()))
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Fractions of calls (0.0 to 1.0) the proxy faults. All but `lose_answer` are answered by the
/// proxy before anything reaches moto, so they have no effect there; `lose_answer` forwards the
/// call, lets moto act on it, and then drops the connection without the answer: a client that
/// retries blindly creates a duplicate, so "nothing duplicated" is something a test can fail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Throttling in the service's own dialect (EC2 `RequestLimitExceeded` 503, SSM
    /// `ThrottlingException` 400).
    pub throttle: f64,
    /// HTTP 500 `InternalError`.
    pub server_error: f64,
    /// The connection is closed without an answer.
    pub drop: f64,
    /// SSM `InvalidInstanceId` on SendCommand (an agent not registered yet).
    pub invalid_instance: f64,
    /// Forwarded and acted on, then the connection is closed before the answer.
    pub lose_answer: f64,
    /// Same seed, same sequence of decisions for the same sequence of calls.
    pub seed: u64,
}

/// What the proxy did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub forwarded: u64,
    pub throttled: u64,
    pub server_errors: u64,
    pub dropped: u64,
    pub invalid_instance: u64,
    /// Of the forwarded calls, those whose answer was lost; per operation below.
    pub lost_answers: u64,
    pub lost_send_command_answers: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    dropped: AtomicU64,
    invalid_instance: AtomicU64,
    lost_answers: AtomicU64,
    lost_send_command_answers: AtomicU64,
}

struct ProxyState {
    upstream: String,
    faults: Faults,
    rng: Mutex<fastrand::Rng>,
    counters: Counters,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct FaultProxy {
    port: u16,
    state: Arc<ProxyState>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (e.g. a moto endpoint).
    pub fn start(upstream: &str, faults: Faults) -> Result<Self> {
        let rt = background_runtime()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            faults,
            rng: Mutex::new(fastrand::Rng::with_seed(faults.seed)),
            counters: Counters::default(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        });
        let shared = state.clone();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { state.handle(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy {
            port,
            state,
            rt: Some(rt),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        aws_env_for(&self.endpoint())
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.state.counters;
        FaultCounts {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            server_errors: c.server_errors.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            invalid_instance: c.invalid_instance.load(Ordering::Relaxed),
            lost_answers: c.lost_answers.load(Ordering::Relaxed),
            lost_send_command_answers: c.lost_send_command_answers.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A refusal from the proxy: hyper closes the connection without answering.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

enum Fault {
    Throttle,
    ServerError,
    Drop,
    InvalidInstance,
    LoseAnswer,
}

impl ProxyState {
    fn decide(&self, is_send_command: bool) -> Option<Fault> {
        let f = &self.faults;
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let (r, r2, r3) = (rng.f64(), rng.f64(), rng.f64());
        if r3 < f.lose_answer {
            Some(Fault::LoseAnswer)
        } else if r < f.throttle {
            Some(Fault::Throttle)
        } else if r < f.throttle + f.server_error {
            Some(Fault::ServerError)
        } else if r < f.throttle + f.server_error + f.drop {
            Some(Fault::Drop)
        } else if is_send_command && r2 < f.invalid_instance {
            Some(Fault::InvalidInstance)
        } else {
            None
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> std::result::Result<Response<Full<Bytes>>, Dropped> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
        // SSM speaks JSON with an X-Amz-Target header; EC2 speaks the query protocol.
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let json = target.is_some();
        let is_send_command = target.as_deref() == Some("AmazonSSM.SendCommand");
        let c = &self.counters;
        match self.decide(is_send_command) {
            Some(Fault::Throttle) => {
                c.throttled.fetch_add(1, Ordering::Relaxed);
                Ok(if json {
                    aws_json(400, "ThrottlingException", "Rate exceeded (injected)")
                } else {
                    ec2_xml(
                        503,
                        "RequestLimitExceeded",
                        "Request limit exceeded (injected).",
                    )
                })
            }
            Some(Fault::ServerError) => {
                c.server_errors.fetch_add(1, Ordering::Relaxed);
                Ok(if json {
                    aws_json(500, "InternalServerError", "injected")
                } else {
                    ec2_xml(
                        500,
                        "InternalError",
                        "An internal error has occurred (injected).",
                    )
                })
            }
            Some(Fault::Drop) => {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                Err(Dropped)
            }
            Some(Fault::InvalidInstance) => {
                c.invalid_instance.fetch_add(1, Ordering::Relaxed);
                Ok(aws_json(
                    400,
                    "InvalidInstanceId",
                    "Instances not in a valid state for account (injected)",
                ))
            }
            Some(Fault::LoseAnswer) => {
                c.forwarded.fetch_add(1, Ordering::Relaxed);
                c.lost_answers.fetch_add(1, Ordering::Relaxed);
                if is_send_command {
                    c.lost_send_command_answers.fetch_add(1, Ordering::Relaxed);
                }
                // moto acts on it; the client never hears.
                let _ = self.forward(parts, body).await;
                Err(Dropped)
            }
            None => {
                c.forwarded.fetch_add(1, Ordering::Relaxed);
                self.forward(parts, body).await
            }
        }
    }

    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> std::result::Result<Response<Full<Bytes>>, Dropped> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri: hyper::Uri = format!("{}{}", self.upstream, path)
            .parse()
            .map_err(|_| Dropped)?;
        let mut req = Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            req = req.header(name, value);
        }
        let req = req.body(Full::new(body)).map_err(|_| Dropped)?;
        let resp = self.client.request(req).await.map_err(|_| Dropped)?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
        Ok(Response::from_parts(parts, Full::new(body)))
    }
}

fn aws_json(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"__type": code, "message": message}).to_string();
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "00000000-0000-0000-0000-00000000fa17")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn ec2_xml(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>00000000-fa17</RequestID></Response>"
    );
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "text/xml;charset=UTF-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A runtime on its own threads, so servers keep running while the test blocks, and so sync and
/// async tests can both own one.
pub(crate) fn background_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}
