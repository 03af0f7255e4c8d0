//! IMDSv2 client: a session token, then bounded retries with backoff on every read.
//! Plain HTTP on a link-local address, so a small blocking client is all that is needed.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use log::{debug, trace, warn};

use crate::error::{Error, Result};
use crate::metadata::{parse_eni, parse_mac_list};
use crate::model::{EniId, ImdsEni, Instance, Mac, Unusable, UnusableKind};

pub(crate) const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// IMDS over IPv6 (Nitro instances, where the instance's metadata options enable it): the way
/// in for an instance whose IPv4 stack cannot reach 169.254.169.254.
pub(crate) const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
pub(crate) const ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// `IPv4` or `IPv6`, as the AWS SDKs read it: that endpoint alone. Unset, the agent tries
/// IPv4 first and IPv6 when IPv4 cannot even connect (amazon-ec2-net-utils does the same).
pub(crate) const MODE_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";

const TOKEN_TTL_SECS: &str = "21600";
/// Tries per request (the first plus retries), backing off 100, 200, 400, 800 ms.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// No metadata value is anywhere near this; a bigger body is an attack or a bug.
const MAX_BODY: u64 = 64 * 1024;
/// Threads reading ENIs side by side.
const MAX_READERS: usize = 4;
/// The keys of an ENI's metadata directory that cannot change while it stays attached: EC2
/// fixes them at attach time (the attachment's device and card, the ENI, its subnet). Addresses,
/// prefixes, the subnet's IPv6 blocks and the VPC's blocks can change at any time.
pub(crate) const FIXED_ENI_KEYS: [&str; 4] = [
    "device-number",
    "network-card",
    "interface-id",
    "subnet-ipv4-cidr-block",
];
/// The instance's keys that cannot change while it runs.
pub(crate) const FIXED_INSTANCE_KEYS: [&str; 2] = ["instance-id", "mac"];

/// Shared by the threads that read ENIs in parallel (one IMDS round trip is about a
/// millisecond on an instance, and an ENI takes eight of them).
pub struct Imds {
    /// Where to ask, in order; the first that hands out a token serves the whole run.
    endpoints: Vec<String>,
    /// Index into `endpoints` of the one in use.
    current: AtomicUsize,
    agent: ureq::Agent,
    token: Mutex<Option<String>>,
    attempts: AtomicU32,
    /// Values of fixed keys (FIXED_*_KEYS, by metadata path), read in this run or handed in.
    fixed: Mutex<BTreeMap<String, String>>,
    /// Serve fixed keys from `fixed` without asking IMDS (the periodic check).
    reuse_fixed: bool,
    /// Least time between two requests, and when the next may start (the periodic check).
    pace: Option<(Duration, Mutex<Instant>)>,
}

/// What a GET came back with, once retries are done.
enum Fetched {
    Body(String),
    NotFound,
}

impl Imds {
    /// Uses `AWS_EC2_METADATA_SERVICE_ENDPOINT` when set; else the endpoint
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE` names; else IPv4, then IPv6 when IPv4 cannot
    /// connect (an IPv6-only instance whose IPv4 stack is off).
    pub(crate) fn from_env() -> Result<Self> {
        let list = endpoints(
            std::env::var(ENDPOINT_ENV).ok(),
            std::env::var(MODE_ENV).ok(),
        )?;
        Self::with_fallback(&list.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn new(endpoint: &str) -> Result<Self> {
        Self::with_fallback(&[endpoint])
    }

    /// Tries each endpoint in turn for the session token (moving on when one cannot be
    /// connected to); the one that answers serves every read of the run.
    pub fn with_fallback(endpoints: &[&str]) -> Result<Self> {
        let mut list = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let endpoint = endpoint.trim_end_matches('/').to_owned();
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(Error::Usage(format!(
                    "{ENDPOINT_ENV}={:?} is not an http:// URL",
                    crate::model::clip(&endpoint)
                )));
            }
            list.push(endpoint);
        }
        assert!(!list.is_empty(), "at least one IMDS endpoint");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Metadata must never go through a proxy named in the environment.
            .proxy(None)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(1)))
            .timeout_global(Some(Duration::from_secs(3)))
            .max_redirects(0)
            .build()
            .into();
        Ok(Imds {
            endpoints: list,
            current: AtomicUsize::new(0),
            agent,
            token: Mutex::new(None),
            attempts: AtomicU32::new(0),
            fixed: Mutex::new(BTreeMap::new()),
            reuse_fixed: false,
            pace: None,
        })
    }

    /// Answers the fixed keys in `known` (metadata path → value, as `fixed_values` gave them
    /// in an earlier run, for ENIs still attached as they were then) without a request. The
    /// values still go through the same parsing as fresh ones.
    pub fn reuse_fixed(&mut self, known: BTreeMap<String, String>) {
        self.fixed = Mutex::new(known);
        self.reuse_fixed = true;
    }

    /// At most one request per `interval`, across threads: a run that is not in a hurry (the
    /// periodic check) stays far below IMDS's 1,024 packets per second however many ENIs.
    pub fn pace(&mut self, interval: Duration) {
        self.pace = Some((interval, Mutex::new(Instant::now())));
    }

    /// The fixed keys' values known now (read in this run or handed in), by metadata path.
    pub fn fixed_values(&self) -> BTreeMap<String, String> {
        self.fixed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for this request's turn when paced.
    fn wait_turn(&self) {
        if let Some((interval, next)) = &self.pace {
            let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if *next > now {
                sleep(*next - now);
            }
            *next = Instant::now() + *interval;
        }
    }

    /// A fixed key: from what is known when reuse is on, else read (and remembered).
    fn get_fixed(&self, path: &str) -> Result<Option<String>> {
        if self.reuse_fixed {
            if let Some(v) = self
                .fixed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(path)
            {
                trace!("{path}: fixed, not read again");
                return Ok(Some(v.clone()));
            }
        }
        let v = self.get_optional(path)?;
        if let Some(v) = &v {
            self.fixed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_owned(), v.clone());
        }
        Ok(v)
    }

    /// The endpoint in use (the first until another handed out the token).
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current.load(Ordering::Relaxed)]
    }

    /// HTTP requests made so far (retries included), for the report.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    fn fail(&self, reason: impl Into<String>) -> Error {
        Error::Imds {
            endpoint: self.endpoints.join(" or "),
            reason: reason.into(),
        }
    }

    fn token(&self) -> Result<String> {
        // Held across the fetch so that parallel readers wait for one token, not fetch many.
        let mut slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &*slot {
            return Ok(t.clone());
        }
        let mut last = String::new();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let url = format!("{}/latest/api/token", self.endpoint());
            self.wait_turn();
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let res = self
                .agent
                .put(&url)
                .header("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECS)
                .send_empty();
            match res {
                Ok(mut r) if r.status().is_success() => {
                    let t = read_body(r.body_mut())
                        .map_err(|e| self.fail(format!("reading token: {e}")))?;
                    let t = t.trim().to_owned();
                    if t.is_empty() || t.len() > 1024 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(self.fail("the token service returned an unusable token"));
                    }
                    *slot = Some(t.clone());
                    return Ok(t);
                }
                Ok(r) if retryable(r.status().as_u16()) => {
                    last = format!("HTTP {}", r.status().as_u16())
                }
                Ok(r) => {
                    return Err(self.fail(format!(
                    "token request refused with HTTP {} (IMDSv2 disabled, or hop limit too low?)",
                    r.status().as_u16()
                )))
                }
                Err(e) => {
                    last = format!("{}: {e}", self.endpoint());
                    // No connection at all: the next attempt asks the next endpoint.
                    if self.endpoints.len() > 1 {
                        let next =
                            (self.current.load(Ordering::Relaxed) + 1) % self.endpoints.len();
                        self.current.store(next, Ordering::Relaxed);
                    }
                }
            }
            if attempt < ATTEMPTS {
                debug!("IMDS token attempt {attempt} failed ({last}); retrying in {backoff:?}");
                sleep(backoff);
                backoff *= 2;
            }
        }
        Err(self.fail(format!("no token after {ATTEMPTS} attempts: {last}")))
    }

    /// GET a metadata path (relative to `/latest/meta-data/`).
    fn get(&self, path: &str) -> Result<Fetched> {
        let mut last = String::new();
        let mut backoff = FIRST_BACKOFF;
        let mut renewed = false;
        let mut attempt = 1;
        while attempt <= ATTEMPTS {
            let token = self.token()?;
            // After the token: it decides which endpoint serves the run.
            let url = format!("{}/latest/meta-data/{path}", self.endpoint());
            self.wait_turn();
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let res = self
                .agent
                .get(&url)
                .header("X-aws-ec2-metadata-token", &token)
                .call();
            trace!(
                "GET {path}: {} in {} us",
                res.as_ref()
                    .map(|r| r.status().as_u16().to_string())
                    .unwrap_or_else(|e| e.to_string()),
                started.elapsed().as_micros()
            );
            match res {
                Ok(mut r) => match r.status().as_u16() {
                    200 => {
                        return read_body(r.body_mut())
                            .map(Fetched::Body)
                            .map_err(|e| Error::bad_metadata(path, e));
                    }
                    404 => return Ok(Fetched::NotFound),
                    // An expired or rotated token: fetch a new one, once, without counting a try.
                    401 if !renewed => {
                        renewed = true;
                        let mut slot = self.token.lock().unwrap_or_else(|e| e.into_inner());
                        if slot.as_deref() == Some(token.as_str()) {
                            *slot = None;
                        }
                        continue;
                    }
                    s if retryable(s) => last = format!("HTTP {s}"),
                    s => return Err(self.fail(format!("GET {path}: HTTP {s}"))),
                },
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                warn!("IMDS GET {path} failed ({last}); retrying in {backoff:?}");
                sleep(backoff);
                backoff *= 2;
            }
            attempt += 1;
        }
        Err(self.fail(format!(
            "GET {path}: no answer after {ATTEMPTS} attempts: {last}"
        )))
    }

    fn get_required(&self, path: &str) -> Result<String> {
        match self.get(path)? {
            Fetched::Body(b) => Ok(b),
            Fetched::NotFound => Err(Error::bad_metadata(path, "missing")),
        }
    }

    fn get_optional(&self, path: &str) -> Result<Option<String>> {
        Ok(match self.get(path)? {
            Fetched::Body(b) => Some(b),
            Fetched::NotFound => None,
        })
    }

    /// Reads every interface of the instance. Each ENI is parsed on its own: one whose metadata
    /// is missing or malformed is listed in `unusable` (and never configured on the
    /// strength of garbage) while the others are read as usual. Failures to reach IMDS still
    /// fail the whole read.
    pub fn instance(&self) -> Result<Instance> {
        let (instance_id, primary_mac) = self.identity()?;
        self.read_enis(instance_id, primary_mac, &[])
    }

    /// The instance again, while waiting: only the list of MACs and the ENIs not in `keep` are
    /// read; those in `keep` (already read and ready) are taken as they were, if still listed.
    /// A wait polls every second; re-reading every key of every ENI each time would, on a host
    /// with dozens of ENIs, approach IMDS's limit of 1,024 packets per second per interface.
    pub(crate) fn refresh(&self, prev: &Instance, keep: &[Mac]) -> Result<Instance> {
        let kept: Vec<ImdsEni> = prev
            .enis
            .iter()
            .filter(|e| keep.contains(&e.mac))
            .cloned()
            .collect();
        self.read_enis(prev.instance_id.clone(), prev.primary_mac, &kept)
    }

    fn identity(&self) -> Result<(Option<String>, Option<Mac>)> {
        let instance_id = self.get_fixed("instance-id")?.map(|s| s.trim().to_owned());
        if let Some(id) = &instance_id {
            if !symroute_ids::is_ec2_id(id, "i-") {
                return Err(Error::bad_metadata(
                    "instance-id",
                    format!("{:?} is not an instance id", crate::model::clip(id)),
                ));
            }
        }
        let primary_mac = match self.get_fixed("mac")? {
            Some(m) => Some(
                m.trim()
                    .parse::<Mac>()
                    .map_err(|e| Error::bad_metadata("mac", e))?,
            ),
            None => None,
        };
        Ok((instance_id, primary_mac))
    }

    fn read_enis(
        &self,
        instance_id: Option<String>,
        primary_mac: Option<Mac>,
        kept: &[ImdsEni],
    ) -> Result<Instance> {
        let list = self.get_required("network/interfaces/macs/")?;
        let listed = parse_mac_list(&list)?;
        let macs: Vec<Mac> = listed
            .iter()
            .copied()
            .filter(|m| !kept.iter().any(|e| e.mac == *m))
            .collect();
        // A few readers share the ENIs: on an instance each read waits about a millisecond on
        // IMDS, so reading ENIs side by side pays; more threads than that only contend for the
        // CPU. Results keep IMDS's order; the first error wins.
        let readers = macs.len().clamp(1, MAX_READERS);
        let read_one = |mac: Mac| {
            let base = format!("network/interfaces/macs/{mac}/");
            let mut fields = |name: &str| {
                let path = format!("{base}{name}");
                if FIXED_ENI_KEYS.contains(&name) {
                    self.get_fixed(&path)
                } else {
                    self.get_optional(&path)
                }
            };
            parse_eni(mac, &mut fields)
        };
        let mut slots: Vec<Option<Result<ImdsEni>>> = macs.iter().map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..readers)
                .map(|r| {
                    let macs = &macs;
                    let read_one = &read_one;
                    s.spawn(move || {
                        (r..macs.len())
                            .step_by(readers)
                            .map(|i| (i, read_one(macs[i])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, res) in h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                    slots[i] = Some(res);
                }
            }
        });
        let mut enis: Vec<ImdsEni> = Vec::new();
        let mut unusable = Vec::new();
        enis.extend(kept.iter().filter(|e| listed.contains(&e.mac)).cloned());
        for (mac, slot) in macs.iter().zip(slots) {
            match slot.expect("every ENI was read") {
                Ok(eni) => enis.push(eni),
                Err(Error::BadMetadata { path, reason }) => {
                    unusable.push(self.unusable(*mac, &path, &reason)?)
                }
                Err(e) => return Err(e),
            }
        }
        // IMDS's order, whichever ENIs were kept.
        enis.sort_by_key(|e| listed.iter().position(|m| *m == e.mac));
        let mut seen: Vec<&EniId> = Vec::new();
        for e in &enis {
            if seen.contains(&&e.eni_id) {
                return Err(Error::bad_metadata(
                    "network/interfaces/macs/",
                    format!("{} listed twice", e.eni_id),
                ));
            }
            seen.push(&e.eni_id);
        }
        Ok(Instance {
            instance_id,
            primary_mac,
            enis,
            unusable,
        })
    }

    /// Why one ENI's metadata cannot be used: still missing, or malformed.
    fn unusable(&self, mac: Mac, path: &str, reason: &str) -> Result<Unusable> {
        let base = format!("network/interfaces/macs/{mac}/");
        let eni_id = self
            .get_optional(&format!("{base}interface-id"))?
            .and_then(|s| s.trim().parse::<EniId>().ok());
        let field = path.strip_prefix(&base).unwrap_or(path);
        let kind = if reason != "missing" {
            UnusableKind::Malformed
        } else {
            UnusableKind::NotYet
        };
        let reason = match kind {
            UnusableKind::NotYet => format!("metadata has no {field} yet"),
            UnusableKind::Malformed => format!("{field}: {reason}; left alone"),
        };
        Ok(Unusable {
            mac,
            eni_id,
            kind,
            reason,
        })
    }
}

/// The endpoints to try, in order, from `AWS_EC2_METADATA_SERVICE_ENDPOINT` and
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE` (see [`Imds::from_env`]).
fn endpoints(endpoint: Option<String>, mode: Option<String>) -> Result<Vec<String>> {
    Ok(match (endpoint, mode) {
        (Some(e), _) => vec![e],
        (None, None) => vec![DEFAULT_ENDPOINT.into(), IPV6_ENDPOINT.into()],
        (None, Some(m)) if m.eq_ignore_ascii_case("ipv4") => vec![DEFAULT_ENDPOINT.into()],
        (None, Some(m)) if m.eq_ignore_ascii_case("ipv6") => vec![IPV6_ENDPOINT.into()],
        (None, Some(m)) => {
            return Err(Error::Usage(format!(
                "{MODE_ENV}={:?} is neither IPv4 nor IPv6",
                crate::model::clip(&m)
            )))
        }
    })
}

fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

fn read_body(body: &mut ureq::Body) -> std::result::Result<String, String> {
    let mut buf = Vec::new();
    body.as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_BODY {
        return Err(format!("value larger than {MAX_BODY} bytes"));
    }
    String::from_utf8(buf).map_err(|_| "value is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoints_follow_the_sdks_variables_and_fall_back_to_ipv6() {
        let e = |a: Option<&str>, b: Option<&str>| {
            endpoints(a.map(str::to_owned), b.map(str::to_owned))
        };
        assert_eq!(
            e(None, None).unwrap(),
            ["http://169.254.169.254", "http://[fd00:ec2::254]"]
        );
        assert_eq!(e(None, Some("IPv6")).unwrap(), ["http://[fd00:ec2::254]"]);
        assert_eq!(e(None, Some("ipv4")).unwrap(), ["http://169.254.169.254"]);
        // An explicit endpoint wins over the mode, as in the SDKs.
        assert_eq!(
            e(Some("http://127.0.0.1:1338"), Some("IPv6")).unwrap(),
            ["http://127.0.0.1:1338"]
        );
        let err = e(None, Some("both")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(MODE_ENV), "{err}");
    }
}
