//! An IMDSv2 stand-in: tokens, a mutable metadata tree, and fault injection, served over
//! HTTP/1.1 on 127.0.0.1 of the root namespace or of a test namespace.

mod http;
mod meta;
mod tree;

use std::collections::HashMap;
use std::io::{BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use meta::{EniMeta, InstanceMeta};

use crate::cmd;
use crate::error::{Error, Result};
use crate::netns;
use http::{HttpRequest, HttpResponse};
use tree::{Lookup, Tree};

const LOOPBACK: &str = "127.0.0.1:0";
const STANDARD: &str = "169.254.169.254:80";
const TOKEN_PATH: &str = "/latest/api/token";

/// The dated versions the stand-in serves besides `latest`, all with the same tree (the agent
/// reads `latest`; cloud-init's EC2 datasource probes 2021-03-23, 2018-09-24, 2016-09-02 and
/// 2009-04-04). Real IMDS lists more; a version not here is answered 404, which is stricter.
const VERSIONS: [&str; 6] = [
    "2009-04-04",
    "2016-09-02",
    "2018-09-24",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
];
const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// How often idle keep-alive connections look whether the server is stopping.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// One request as the server saw it (logged before any fault is applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Whether it carried a currently valid token.
    pub valid_token: bool,
}

#[derive(Default)]
struct Faults {
    fail: u32,
    fail_status: u16,
    close: u32,
    delay: Duration,
}

#[derive(Default)]
struct Shared {
    tree: Mutex<Tree>,
    tokens: Mutex<HashMap<String, Instant>>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running IMDS stand-in; stops on drop.
pub struct Imds {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: TcpListener,
    thread: Option<JoinHandle<()>>,
}

impl Imds {
    /// Serves on 127.0.0.1 inside namespace `ns` (reachable only from there).
    pub fn start_in(ns: &str) -> Result<Imds> {
        Imds::start(Some(ns.to_string()), LOOPBACK)
    }

    /// Serves at the real IMDS address, `http://169.254.169.254`, inside namespace `ns`, so a
    /// client there needs no endpoint override (as on EC2). The address is added to the
    /// namespace's loopback; the root namespace is never touched.
    pub fn start_in_standard(ns: &str) -> Result<Imds> {
        cmd::ip(
            Some(ns),
            &["addr", "replace", "169.254.169.254/32", "dev", "lo"],
        )?;
        Imds::start(Some(ns.to_string()), STANDARD)
    }

    /// Serves on the root namespace's 127.0.0.1.
    pub fn start_local() -> Result<Imds> {
        Imds::start(None, LOOPBACK)
    }

    fn start(ns: Option<String>, bind: &'static str) -> Result<Imds> {
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            // A socket keeps the namespace it was created in, so entering it only to bind is
            // enough; connections accepted later belong to it too.
            let bound = ns
                .as_deref()
                .map_or(Ok(()), netns::enter)
                .and_then(|()| TcpListener::bind(bind).map_err(Error::from))
                .and_then(|l| Ok((l.try_clone()?, l)));
            match bound {
                Ok((listener, handle)) => {
                    let _ = tx.send(Ok(handle));
                    accept_loop(listener, s);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let listener = rx
            .recv()
            .map_err(|_| Error::Io(ErrorKind::BrokenPipe.into()))??;
        Ok(Imds {
            addr: listener.local_addr()?,
            shared,
            listener,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` (or `http://169.254.169.254`), for
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        if self.addr.port() == 80 {
            format!("http://{}", self.addr.ip())
        } else {
            format!("http://{}", self.addr)
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets a leaf, e.g. `set("meta-data/instance-id", "i-0abc")` (a leading `/latest/` is
    /// accepted too). Directories exist as soon as a leaf below them does.
    pub fn set(&self, path: &str, body: &str) {
        lock(&self.shared.tree).set(path, body);
    }

    /// Removes a leaf or a whole directory.
    pub fn remove(&self, path: &str) {
        lock(&self.shared.tree).remove(path);
    }

    /// The body of a leaf, if set.
    pub fn get(&self, path: &str) -> Option<String> {
        lock(&self.shared.tree).get(path).cloned()
    }

    /// Writes `meta-data/instance-id`, `meta-data/mac` and the placement basics.
    pub fn set_instance(&self, meta: &InstanceMeta) {
        let mut t = lock(&self.shared.tree);
        for (k, v) in meta.entries() {
            t.set(&k, &v);
        }
    }

    /// Writes (or replaces, in one step that readers never see half done) an ENI's directory.
    pub fn put_eni(&self, meta: &EniMeta) {
        let mut t = lock(&self.shared.tree);
        t.remove(&EniMeta::dir(&meta.mac));
        for (k, v) in meta.entries() {
            t.set(&k, &v);
        }
    }

    /// Removes an ENI's directory, as IMDS does after a detach.
    pub fn remove_eni(&self, mac: &str) {
        lock(&self.shared.tree).remove(&EniMeta::dir(mac));
    }

    /// The next `n` requests (token requests included) get `status` and an empty body.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut f = lock(&self.shared.faults);
        f.fail = n;
        f.fail_status = status;
    }

    /// Every token issued so far stops being valid, as when a token's TTL ends or IMDS restarts:
    /// a client holding one is answered 401 until it asks for a new one.
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).clear();
    }

    /// Every answer waits `ms` milliseconds first (0 to stop delaying).
    pub fn delay(&self, ms: u64) {
        lock(&self.shared.faults).delay = Duration::from_millis(ms);
    }

    /// The next `n` requests are read and then the connection is closed without an answer.
    pub fn close_next(&self, n: u32) {
        lock(&self.shared.faults).close = n;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// How many requests have been received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // shutdown() wakes a thread blocked in accept() on Linux, from any namespace.
        // SAFETY: the fd belongs to self.listener, which stays open until after this call.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            let _ = serve(stream, &s);
        });
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    // Headers and body go out in one write, but a client's pipelined requests still should
    // not wait for delayed ACKs.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE_POLL))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let req = match http::read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        // A stopped server answers nothing more, even on connections still open.
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let valid_token = token_valid(shared, &req);
        lock(&shared.log).push(Request {
            method: req.method.clone(),
            path: req.path.clone(),
            valid_token,
        });
        let (close, fail, delay) = {
            let mut f = lock(&shared.faults);
            let close = f.close > 0;
            let fail = (!close && f.fail > 0).then_some(f.fail_status);
            if close {
                f.close -= 1;
            } else if fail.is_some() {
                f.fail -= 1;
            }
            (close, fail, f.delay)
        };
        if close {
            return Ok(());
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let resp = match fail {
            Some(status) => HttpResponse::new(status, ""),
            None => answer(shared, &req, valid_token),
        };
        http::write_response(&mut writer, &resp, req.keep_alive, req.method == "HEAD")?;
        if !req.keep_alive {
            return Ok(());
        }
    }
}

fn token_valid(shared: &Shared, req: &HttpRequest) -> bool {
    let Some(token) = req.header(TOKEN_HEADER) else {
        return false;
    };
    let mut tokens = lock(&shared.tokens);
    let now = Instant::now();
    tokens.retain(|_, expiry| *expiry > now);
    tokens.contains_key(token)
}

fn answer(shared: &Shared, req: &HttpRequest, valid_token: bool) -> HttpResponse {
    match (req.method.as_str(), req.path.as_str()) {
        ("PUT", TOKEN_PATH) => issue_token(shared, req),
        ("GET" | "HEAD", path) => {
            if !valid_token {
                return HttpResponse::new(401, "");
            }
            if path == "/" {
                let mut list = VERSIONS.join("\n");
                list.push_str("\nlatest");
                return HttpResponse::new(200, list);
            }
            let Some(rel) = path
                .strip_prefix('/')
                .and_then(|p| p.split_once('/').or(Some((p, ""))))
                .filter(|(v, _)| *v == "latest" || VERSIONS.contains(v))
                .map(|(_, rel)| rel)
            else {
                return HttpResponse::new(404, "");
            };
            match lock(&shared.tree).lookup(rel) {
                Lookup::Found(body) => HttpResponse::new(200, body),
                Lookup::NotFound => HttpResponse::new(404, ""),
            }
        }
        _ => HttpResponse::new(405, ""),
    }
}

fn issue_token(shared: &Shared, req: &HttpRequest) -> HttpResponse {
    let ttl = req
        .header(TTL_HEADER)
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|t| (1..=21600).contains(t));
    let Some(ttl) = ttl else {
        return HttpResponse::new(400, "");
    };
    let token = new_token();
    lock(&shared.tokens).insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
    let mut resp = HttpResponse::new(200, token);
    resp.headers.push((TTL_HEADER, ttl.to_string()));
    resp
}

fn new_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    let a = state.hash_one(Instant::now());
    let b = state.hash_one(a);
    format!("AQAEA{a:016x}{b:016x}==")
}
