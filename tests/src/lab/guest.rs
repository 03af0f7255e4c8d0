//! A QEMU guest in the simulated VPC: booted from the lab image (copy-on-write, so the image
//! stays pristine), its NICs tap ports on the subnets' bridges, driven through QMP (hot-plug,
//! power) and the guest agent (commands, files). Nothing in it needs the guest's network.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::agent::{GuestAgent, GuestOutput};
use super::image::Image;
use super::qmp::Channel;
use crate::cmd;
use crate::error::{Error, Result};
use crate::Eni;

/// PCIe root ports the machine is built with: one NIC each, hot-plugged or not (EC2 instance
/// types of the lab's size take 3 or 4 ENIs).
const ROOT_PORTS: usize = 6;
/// Bounds: a TCG boot of the Debian cloud kernel takes 20-30 s here when the machine is idle
/// (Debian 13's about twice that), and cloud-init's first boot 100 s, since on Debian its
/// network stage holds back sysinit.target (the guest agent included) until wait-online and
/// its metadata crawl are done; `make test` runs three guests at once.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// From the guest agent's first answer to `systemctl is-system-running --wait`: more than
/// systemd's own 90 s job timeout (wait-online), so a unit that hangs fails and is reported.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or powered-off) guest. Killed, and its run directory removed, on drop.
pub struct Guest {
    name: String,
    router_ns: String,
    dir: PathBuf,
    image: Image,
    qemu: Mutex<Option<Child>>,
    qmp: Channel,
    agent: GuestAgent,
    /// Which ENI port (tap name) sits on each root port.
    slots: Mutex<[Option<String>; ROOT_PORTS]>,
    boots: Mutex<u32>,
    /// CPU time of the QEMU processes of earlier boots (power-offs), for the lab's CPU figure.
    cpu_done: Mutex<Duration>,
    /// How the first boot came about (resumed from the image's booted state, or booted cold
    /// and saved first).
    first_boot: FirstBoot,
}

/// How a guest's first boot came about. Every lab guest's first boot is the same (the image,
/// the same machine, eth0 alone, no network manager yet), so it is done once per image and
/// machine and kept as a booted state (QEMU's migration stream and the disk as it was), from
/// which each guest resumes; under TCG a cold boot is 15 to 25 s of a core, a resume about 1 s.
/// Reboots and stop/starts are always real boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBoot {
    /// Resumed from the kept booted state.
    Resumed,
    /// No booted state was kept for this image and machine: booted cold, saved, then resumed.
    BootedAndSaved,
}

impl FirstBoot {
    pub fn describe(self) -> &'static str {
        match self {
            FirstBoot::Resumed => "resumed from the image's booted state",
            FirstBoot::BootedAndSaved => "booted cold and saved as the image's booted state",
        }
    }
}

impl Guest {
    /// Creates the guest's disk and brings it up with `nics` on its first root ports, in that
    /// order (the first is eth0): resumed from the image's booted state for this machine,
    /// which is made first (a cold boot, then saved) when there is none. Returns once the
    /// guest agent answers and systemd says the boot is done.
    pub fn boot(
        name: &str,
        router_ns: &str,
        dir: &Path,
        image: &Image,
        nics: &[&Eni],
    ) -> Result<Guest> {
        std::fs::create_dir_all(dir)?;
        let booted = Booted::of(image, &machine_key(name, image, dir, nics))?;
        let mut first_boot = FirstBoot::Resumed;
        let mut template_cpu = Duration::ZERO;
        if !booted.exists() {
            // One guest at a time makes a booted state, in this process or another: the
            // others wait for it rather than boot the same machine cold beside it.
            let _making = booted.lock()?;
            if !booted.exists() {
                template_cpu = booted.make(name, router_ns, &dir.join("template"), image, nics)?;
                first_boot = FirstBoot::BootedAndSaved;
            }
        }
        overlay(&booted.disk(), "qcow2", &dir.join("disk.qcow2"))?;
        let guest = Guest::new(name, router_ns, dir, image, first_boot);
        guest.count_cpu(Some(template_cpu));
        guest.start(nics, Some(&booted.state()))?;
        // The clock went on where the booted state stopped it (hours or days ago); a real
        // instance's is right from its first boot. The system clock only: QEMU's RTC follows
        // the host's, and the guest agent's `guest-set-time` also runs `hwclock`, which Debian
        // 13's minimal system lacks.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| Error::invalid("host clock", e.to_string(), "is before 1970"))?;
        guest.sh_ok(&format!(
            "date -u -s @{}.{:09} >/dev/null",
            now.as_secs(),
            now.subsec_nanos()
        ))?;
        Ok(guest)
    }

    fn new(name: &str, router_ns: &str, dir: &Path, image: &Image, first_boot: FirstBoot) -> Guest {
        Guest {
            name: name.to_string(),
            router_ns: router_ns.to_string(),
            dir: dir.to_path_buf(),
            image: image.clone(),
            qemu: Mutex::new(None),
            qmp: Channel::machine(&dir.join("qmp.sock")),
            agent: GuestAgent::new(name, Channel::guest(&dir.join("qga.sock"))),
            slots: Mutex::new(Default::default()),
            boots: Mutex::new(0),
            cpu_done: Mutex::new(Duration::ZERO),
            first_boot,
        }
    }

    /// How this guest's first boot came about.
    pub fn first_boot(&self) -> FirstBoot {
        self.first_boot
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The guest agent's socket (for `symroute-guest-exec --qga`).
    pub fn qga_socket(&self) -> PathBuf {
        self.dir.join("qga.sock")
    }

    /// Starts QEMU with `nics` and waits for the guest agent. The guest must be off.
    pub fn power_on(&self, nics: &[&Eni]) -> Result<Duration> {
        self.start(nics, None)
    }

    /// Starts QEMU with `nics`, booting, or resuming the migration stream in `incoming`, and
    /// waits until the boot is done.
    fn start(&self, nics: &[&Eni], incoming: Option<&Path>) -> Result<Duration> {
        let started = Instant::now();
        let mut qemu = self.qemu.lock().unwrap_or_else(|p| p.into_inner());
        if qemu.is_some() {
            return Err(Error::invalid("guest", &self.name, "is already running"));
        }
        if nics.len() > ROOT_PORTS {
            return Err(Error::invalid(
                "NIC count",
                nics.len().to_string(),
                format!("the lab machine has {ROOT_PORTS} PCIe root ports"),
            ));
        }
        let boot = {
            let mut b = self.boots.lock().unwrap_or_else(|p| p.into_inner());
            *b += 1;
            *b
        };
        for sock in ["qmp.sock", "qga.sock"] {
            let _ = std::fs::remove_file(self.dir.join(sock));
        }
        let mut c = cmd::in_netns(&self.router_ns, "qemu-system-x86_64");
        c.args(qemu_args(&self.name, &self.image, &self.dir, nics));
        if let Some(state) = incoming {
            // QEMU runs the command with sh; the path is ours (no quote in it).
            c.arg("-incoming")
                .arg(format!("exec:cat '{}'", state.display()));
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        *slots = Default::default();
        for (i, nic) in nics.iter().enumerate() {
            slots[i] = Some(nic.port().to_string());
        }
        drop(slots);
        let log = std::fs::File::create(self.dir.join(format!("qemu-{boot}.log")))?;
        // SAFETY: prctl is async-signal-safe; the guest dies with the test process (Ctrl-C,
        // panic=abort, kill), so no QEMU outlives the run holding a tap.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: "qemu-system-x86_64 (make setup-apt installs qemu-system-x86)".into(),
                source,
            })?;
        *qemu = Some(child);
        drop(qemu);
        if incoming.is_some() {
            self.resume_incoming(started)?;
        }
        self.wait_agent(started, BOOT_TIMEOUT, None)?;
        Ok(started.elapsed())
    }

    /// Waits until the guest agent answers (and, with `old_boot`, from another boot).
    ///
    /// While the old boot shuts down its agent still answers. Asking it for the boot id runs a
    /// command in the guest (about 160 ms of its CPU under TCG, taken from the shutdown), so
    /// the id is asked only once the agent has been silent (the old boot's is gone by then),
    /// and otherwise every few seconds in case a silence fell between two pings.
    fn wait_agent(&self, since: Instant, bound: Duration, old_boot: Option<&str>) -> Result<()> {
        const ASK_ANYWAY: Duration = Duration::from_secs(5);
        let (mut silent, mut asked) = (false, Instant::now());
        loop {
            self.check_alive()?;
            if self.agent.ping(Duration::from_secs(2)) {
                let new_boot = match old_boot {
                    None => true,
                    Some(_) if !silent && asked.elapsed() < ASK_ANYWAY => false,
                    Some(old) => {
                        asked = Instant::now();
                        self.boot_id().is_ok_and(|id| id != old)
                    }
                };
                if new_boot {
                    // Its own bound, not what is left of the boot's: a guest agent that answered
                    // late on a loaded machine left 10 s for the rest of the boot (seen in a CI
                    // rehearsal). A unit that delays the boot is caught by the grid's own check
                    // (systemd-analyze, failed units), not by this wait.
                    return self.wait_booted(SETTLE_TIMEOUT);
                }
            } else {
                silent = true;
            }
            if since.elapsed() > bound {
                return Err(Error::Timeout {
                    what: format!(
                        "guest {} to boot; console ends:\n{}",
                        self.name,
                        self.console_tail(30)
                    ),
                    secs: bound.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The guest agent starts early; a boot is done when systemd says so (`running`, or
    /// `degraded` when a unit failed, which the caller may check).
    fn wait_booted(&self, bound: Duration) -> Result<()> {
        let out = self.agent.exec_env(
            &["systemctl", "is-system-running", "--wait"],
            &[],
            bound.max(Duration::from_secs(10)),
        )?;
        match out.stdout.trim() {
            "running" | "degraded" => Ok(()),
            other => Err(Error::Command {
                cmd: format!("guest {}: systemctl is-system-running --wait", self.name),
                status: other.to_string(),
                stderr: out.stderr,
            }),
        }
    }

    fn check_alive(&self) -> Result<()> {
        let mut qemu = self.qemu.lock().unwrap_or_else(|p| p.into_inner());
        let cpu = qemu.as_ref().and_then(cpu_of);
        match qemu.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            None => Err(Error::invalid("guest", &self.name, "is powered off")),
            Some(status) => {
                self.count_cpu(cpu);
                let log = self.qemu_log();
                *qemu = None;
                Err(Error::Command {
                    cmd: format!("qemu-system-x86_64 ({})", self.name),
                    status: format!("{status:?}"),
                    stderr: format!("{log}\nconsole ends:\n{}", self.console_tail(20)),
                })
            }
        }
    }

    /// The current boot's id (`/proc/sys/kernel/random/boot_id`).
    pub fn boot_id(&self) -> Result<String> {
        Ok(self
            .exec(&["cat", "/proc/sys/kernel/random/boot_id"])?
            .stdout
            .trim()
            .to_string())
    }

    /// Reboots the guest (`systemctl reboot`, as a user would) and waits for the next boot's
    /// guest agent. Hot-plugged NICs stay, as attached ENIs stay across an EC2 reboot.
    pub fn reboot(&self) -> Result<Duration> {
        let old = self.boot_id()?;
        let started = Instant::now();
        self.spawn(&["systemctl", "reboot"])?;
        self.wait_agent(started, BOOT_TIMEOUT, Some(&old))?;
        Ok(started.elapsed())
    }

    /// Waits until QEMU has loaded the incoming state, then lets the guest run: the state was
    /// saved with the guest stopped, and QEMU keeps a guest as the source left it.
    fn resume_incoming(&self, since: Instant) -> Result<()> {
        loop {
            self.check_alive()?;
            // QMP's socket appears once QEMU is up; `inmigrate` while the stream loads.
            let status = self
                .qmp
                .call("query-status", Value::Null, CALL_TIMEOUT)
                .map(|v| v["status"].as_str().unwrap_or_default().to_string());
            match status.as_deref() {
                Ok("paused" | "postmigrate") => {
                    self.qmp.call("cont", Value::Null, CALL_TIMEOUT)?;
                    return Ok(());
                }
                Ok("running") => return Ok(()),
                _ if since.elapsed() > BOOT_TIMEOUT => {
                    return Err(Error::Timeout {
                        what: format!(
                            "guest {} to load its booted state ({status:?}); QEMU says:\n{}",
                            self.name,
                            self.qemu_log()
                        ),
                        secs: BOOT_TIMEOUT.as_secs(),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Stops the guest, writes its state (QEMU's migration stream) to `state`, and ends QEMU.
    fn save(&self, state: &Path) -> Result<()> {
        self.qmp.call("stop", Value::Null, CALL_TIMEOUT)?;
        self.qmp.call(
            "migrate",
            json!({ "uri": format!("exec:cat > '{}'", state.display()) }),
            CALL_TIMEOUT,
        )?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let st = self.qmp.call("query-migrate", Value::Null, CALL_TIMEOUT)?;
            match st["status"].as_str() {
                Some("completed") => break,
                Some("failed" | "cancelled") => {
                    return Err(Error::Command {
                        cmd: format!("QEMU migrate of guest {} to {}", self.name, state.display()),
                        status: st["status"].to_string(),
                        stderr: st["error-desc"].as_str().unwrap_or_default().to_string(),
                    })
                }
                _ if Instant::now() > deadline => {
                    return Err(Error::Timeout {
                        what: format!("saving guest {} to {}", self.name, state.display()),
                        secs: 120,
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        // `quit` may end QEMU before its answer is sent.
        let _ = self.qmp.call("quit", Value::Null, CALL_TIMEOUT);
        self.wait_exit(Duration::from_secs(30), "to quit")
    }

    /// Powers the guest off (ACPI, as an EC2 stop does) and waits for QEMU to exit.
    pub fn power_off(&self) -> Result<()> {
        let _ = self.qmp.call("system_powerdown", Value::Null, CALL_TIMEOUT);
        self.wait_exit(Duration::from_secs(120), "to power off")
    }

    /// Waits (bounded) for QEMU to exit and counts its CPU time; kills it at the bound.
    fn wait_exit(&self, bound: Duration, what: &str) -> Result<()> {
        let deadline = Instant::now() + bound;
        loop {
            let mut qemu = self.qemu.lock().unwrap_or_else(|p| p.into_inner());
            let Some(child) = qemu.as_mut() else {
                return Ok(());
            };
            // Read before reaping: an exited, unreaped QEMU still shows its final CPU times.
            let cpu = cpu_of(child);
            if child.try_wait()?.is_some() {
                self.count_cpu(cpu);
                *qemu = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.count_cpu(cpu);
                *qemu = None;
                return Err(Error::Timeout {
                    what: format!("guest {} {what}", self.name),
                    secs: bound.as_secs(),
                });
            }
            drop(qemu);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Hot-plugs the ENI's NIC (its tap must exist: `Vpc::attach_tap`) on a free root port,
    /// as an EC2 attach appears to the instance.
    pub fn hotplug(&self, eni: &Eni) -> Result<()> {
        let port = eni.port();
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let i = slots
                .iter()
                .position(Option::is_none)
                .ok_or_else(|| Error::invalid("hot-plug", port, "no free PCIe root port left"))?;
            slots[i] = Some(port.to_string());
            i + 1
        };
        self.qmp.call(
            "netdev_add",
            json!({"type": "tap", "id": format!("n-{port}"), "ifname": port,
                   "script": "no", "downscript": "no"}),
            CALL_TIMEOUT,
        )?;
        self.qmp.call(
            "device_add",
            json!({"driver": "virtio-net-pci", "id": format!("d-{port}"),
                   "netdev": format!("n-{port}"), "mac": eni.mac(), "bus": format!("rp{slot}")}),
            CALL_TIMEOUT,
        )?;
        Ok(())
    }

    /// Unplugs the ENI's NIC, as an EC2 detach does, and waits until the guest released it
    /// (PCIe hot-unplug waits for the guest's acknowledgement, ~5 s in Linux's pciehp).
    pub fn unplug(&self, eni: &Eni) -> Result<()> {
        let port = eni.port();
        let id = format!("d-{port}");
        self.qmp
            .call("device_del", json!({ "id": id }), CALL_TIMEOUT)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.has_device(&id)? {
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("guest {} to release NIC {}", self.name, eni.mac()),
                    secs: 60,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.qmp.call(
            "netdev_del",
            json!({"id": format!("n-{port}")}),
            CALL_TIMEOUT,
        )?;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.iter_mut() {
            if s.as_deref() == Some(port) {
                *s = None;
            }
        }
        Ok(())
    }

    fn has_device(&self, id: &str) -> Result<bool> {
        let list = self.qmp.call(
            "qom-list",
            json!({"path": "/machine/peripheral"}),
            CALL_TIMEOUT,
        )?;
        Ok(list
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["name"] == id)))
    }

    /// The guest agent: run commands, write files.
    pub fn agent(&self) -> &GuestAgent {
        &self.agent
    }

    /// [`GuestAgent::exec`].
    pub fn exec(&self, argv: &[&str]) -> Result<GuestOutput> {
        self.agent.exec(argv)
    }

    /// [`GuestAgent::sh`].
    pub fn sh(&self, script: &str) -> Result<GuestOutput> {
        self.agent.sh(script)
    }

    /// [`GuestAgent::sh_ok`].
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        self.agent.sh_ok(script)
    }

    /// [`GuestAgent::write_file`].
    pub fn write_file(&self, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        self.agent.write_file(path, bytes, mode)
    }

    /// [`GuestAgent::spawn`].
    pub fn spawn(&self, argv: &[&str]) -> Result<()> {
        self.agent.spawn(argv)
    }

    /// The last `lines` lines the guest printed on its serial console (boot log).
    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The CPU time (user and system) the guest's QEMU processes have used so far, all boots.
    /// Under TCG every guest instruction is emulated, so this is the guest's real cost to the
    /// machine, apart from waits.
    pub fn cpu_time(&self) -> Duration {
        let running = self
            .qemu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(cpu_of)
            .unwrap_or_default();
        *self.cpu_done.lock().unwrap_or_else(|p| p.into_inner()) + running
    }

    fn count_cpu(&self, cpu: Option<Duration>) {
        *self.cpu_done.lock().unwrap_or_else(|p| p.into_inner()) += cpu.unwrap_or_default();
    }

    fn qemu_log(&self) -> String {
        let boot = *self.boots.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::read_to_string(self.dir.join(format!("qemu-{boot}.log"))).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut child) = self
            .qemu
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os(crate::KEEP_ENV).is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A process's user and system CPU time, from `/proc/<pid>/stat` (fields 14 and 15, after the
/// parenthesised command name, which may hold spaces).
fn cpu_of(child: &Child) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)?;
    Some(Duration::from_millis((utime + stime) * 1000 / hz))
}

/// A booted state kept beside the image: `state` (QEMU's migration stream, taken with the
/// guest stopped) and `disk.qcow2` (the disk as it was then, an overlay on the image that is
/// never written again: each guest writes its own overlay on it).
struct Booted {
    dir: PathBuf,
}

impl Booted {
    /// The booted state for the machine `key` describes, in the image's own directory (so a
    /// new image leaves the old states with the old image).
    fn of(image: &Image, key: &str) -> Result<Booted> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let image_dir = std::fs::canonicalize(&image.rootfs)?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                Error::invalid(
                    "lab image",
                    image.rootfs.display().to_string(),
                    "has no directory",
                )
            })?;
        Ok(Booted {
            dir: image_dir.join(format!("booted-{:016x}", h.finish())),
        })
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }

    /// An exclusive lock on this booted state (`flock` on a file beside it), held while it is
    /// made; released when the file is closed.
    fn lock(&self) -> Result<std::fs::File> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::create(self.dir.with_extension("lock"))?;
        // SAFETY: flock on a descriptor this function owns; blocks until the lock is free.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(file)
    }

    fn exists(&self) -> bool {
        self.state().is_file() && self.disk().is_file()
    }

    /// Boots the machine cold in `work` (the disk an overlay on the image), waits until the
    /// boot is done, stops it and saves it; then moves disk and state into place (a rename, so
    /// a half-made state is never found). Returns the CPU time that took.
    fn make(
        &self,
        name: &str,
        router_ns: &str,
        work: &Path,
        image: &Image,
        nics: &[&Eni],
    ) -> Result<Duration> {
        let tmp = self
            .dir
            .with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(work)?;
        overlay(
            &std::fs::canonicalize(&image.rootfs)?,
            "raw",
            &work.join("disk.qcow2"),
        )?;
        let template = Guest::new(name, router_ns, work, image, FirstBoot::BootedAndSaved);
        let made = template
            .start(nics, None)
            .and_then(|_| template.save(&tmp.join("state")))
            .and_then(|()| {
                Ok(std::fs::rename(
                    work.join("disk.qcow2"),
                    tmp.join("disk.qcow2"),
                )?)
            });
        let cpu = template.cpu_time();
        drop(template);
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Another process may have made it meanwhile: a directory is not renamed over a
        // non-empty one, so the first stays and this one goes.
        if std::fs::rename(&tmp, &self.dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        if !self.exists() {
            return Err(Error::invalid(
                "booted state",
                self.dir.display().to_string(),
                "is incomplete after it was made: delete it and run again",
            ));
        }
        Ok(cpu)
    }
}

/// Creates `disk`, a qcow2 overlay on `backing` (of format `format`): the guest writes there,
/// and `backing` stays as it was.
fn overlay(backing: &Path, format: &str, disk: &Path) -> Result<()> {
    cmd::run(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
            .arg(backing)
            .arg(disk),
    )?;
    Ok(())
}

/// QEMU's command line for a guest in `dir` with `nics` (the first is eth0), without
/// `-incoming`.
fn qemu_args(name: &str, image: &Image, dir: &Path, nics: &[&Eni]) -> Vec<String> {
    let path = |f: &str| dir.join(f).display().to_string();
    let mut a: Vec<String> = [
        "-name",
        name,
        "-accel",
        "tcg",
        "-machine",
        "q35",
        // Every EC2 x86 instance's CPU has RDRAND, and the guest kernel trusts it
        // (random.trust_cpu): its random pool is ready 0.04 s into the boot. TCG's default CPU
        // has none: the pool was ready 17-27 s into a boot, and a boot that needed it sooner
        // spun the kernel's jitter-entropy loop. Measured (networkd row, the reboot: boot,
        // checks after): 57 s of guest CPU and 44 s to the guest agent without it, 45 s and
        // 33 s with it.
        "-cpu",
        "qemu64,+rdrand",
        "-m",
        "1024",
        "-smp",
        "1",
        "-nographic",
        "-nodefaults",
        "-no-user-config",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));
    // The DMI an EC2 instance shows: a system UUID (and serial) that start with "ec2", by
    // which cloud-init and ds-identify tell AWS.
    push(&["-smbios", &ec2_smbios(name)]);
    push(&["-kernel", &image.kernel.display().to_string()]);
    push(&["-initrd", &image.initrd.display().to_string()]);
    // net.ifnames=0: eth0, eth1... in attach order, as Amazon Linux names them.
    // panic=-1: a kernel panic reboots instead of hanging until the bound.
    // quiet: every console byte is an emulated UART write under TCG; without it a boot prints
    // about 1100 lines and costs about 12% more CPU (measured: 24.5 vs 21.1 s of QEMU CPU time
    // per boot, idle machine). systemd still prints failed and slow jobs ("A start job is
    // running..."), what a timed-out boot's console tail needs.
    push(&[
        "-append",
        "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 quiet",
    ]);
    push(&[
        "-drive",
        &format!(
            "file={},format=qcow2,if=virtio,cache=unsafe",
            path("disk.qcow2")
        ),
    ]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={},append=on", path("console.log")),
    ]);
    push(&["-serial", "chardev:console"]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", path("qmp.sock")),
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=qga,path={},server=on,wait=off", path("qga.sock")),
    ]);
    push(&["-device", "virtio-serial-pci,id=vserial"]);
    push(&[
        "-device",
        "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
    ]);
    for i in 1..=ROOT_PORTS {
        push(&[
            "-device",
            &format!("pcie-root-port,id=rp{i},slot={i},chassis={i}"),
        ]);
    }
    for (i, nic) in nics.iter().enumerate() {
        let port = nic.port();
        push(&[
            "-netdev",
            &format!("tap,id=n-{port},ifname={port},script=no,downscript=no"),
        ]);
        push(&[
            "-device",
            &format!(
                "virtio-net-pci,id=d-{port},netdev=n-{port},mac={},bus=rp{}",
                nic.mac(),
                i + 1
            ),
        ]);
    }
    a
}

/// What a booted state must match to be resumed: QEMU's version and the guest's command line
/// with what is only this guest's (its directory, its taps' names) left out. A MAC or a device
/// of another machine makes another key; so does a changed image, whose directory is keyed by
/// its content.
fn machine_key(name: &str, image: &Image, dir: &Path, nics: &[&Eni]) -> String {
    let ports: Vec<&str> = nics.iter().map(|n| n.port()).collect();
    normalised(
        &qemu_version(),
        &qemu_args(name, image, dir, nics),
        &dir.display().to_string(),
        &ports,
    )
}

/// `version` and `args`, one per line, with `dir` and the tap names in `ports` replaced by
/// placeholders.
fn normalised(version: &str, args: &[String], dir: &str, ports: &[&str]) -> String {
    let mut text = version.to_string();
    for arg in args {
        let mut arg = arg.replace(dir, "DIR");
        for (i, port) in ports.iter().enumerate() {
            arg = arg.replace(port, &format!("NIC{i}"));
        }
        text.push('\n');
        text.push_str(&arg);
    }
    text
}

fn qemu_version() -> String {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            std::process::Command::new("qemu-system-x86_64")
                .arg("--version")
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default()
        })
        .clone()
}

/// QEMU's `-smbios type=1` value for a guest: EC2's manufacturer, and a system UUID and serial
/// that start with "ec2" (EC2's own form), the rest derived from the guest's name.
fn ec2_smbios(name: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let a = h.finish();
    (a, name).hash(&mut h);
    let b = h.finish();
    let hex = format!("{a:016x}{b:016x}");
    let uuid = format!(
        "ec2{}-{}-{}-{}-{}",
        &hex[0..5],
        &hex[5..9],
        &hex[9..13],
        &hex[13..17],
        &hex[17..29]
    );
    format!("type=1,manufacturer=Amazon EC2,product=t3.micro,uuid={uuid},serial={uuid}")
}

#[cfg(test)]
mod tests {
    use super::normalised;

    fn args(dir: &str, port: &str, mac: &str) -> Vec<String> {
        vec![
            "-drive".into(),
            format!("file={dir}/disk.qcow2,format=qcow2"),
            "-netdev".into(),
            format!("tap,id=n-{port},ifname={port}"),
            "-device".into(),
            format!("virtio-net-pci,id=d-{port},netdev=n-{port},mac={mac},bus=rp1"),
        ]
    }

    #[test]
    fn a_booted_state_fits_any_guests_directory_and_taps_but_not_another_mac_or_qemu() {
        let key = |dir: &str, port: &str, mac: &str, version: &str| {
            normalised(version, &args(dir, port, mac), dir, &[port])
        };
        let one = key(
            "/tmp/a/guest",
            "srtaa-1-e0",
            "0a:00:00:01:00:0a",
            "QEMU 7.2",
        );
        assert_eq!(
            one,
            key(
                "/tmp/b/guest",
                "srtbb-7-e0",
                "0a:00:00:01:00:0a",
                "QEMU 7.2"
            )
        );
        assert_ne!(
            one,
            key(
                "/tmp/a/guest",
                "srtaa-1-e0",
                "0a:00:00:01:00:0b",
                "QEMU 7.2"
            )
        );
        assert_ne!(
            one,
            key(
                "/tmp/a/guest",
                "srtaa-1-e0",
                "0a:00:00:01:00:0a",
                "QEMU 8.2"
            )
        );
    }
}
