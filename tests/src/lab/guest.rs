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
}

impl Guest {
    /// Creates the guest's disk (a qcow2 overlay on the image) and boots it with `nics` on
    /// its first root ports, in that order (the first is eth0). Returns once the guest agent
    /// answers.
    pub fn boot(
        name: &str,
        router_ns: &str,
        dir: &Path,
        image: &Image,
        nics: &[&Eni],
    ) -> Result<Guest> {
        std::fs::create_dir_all(dir)?;
        let disk = dir.join("disk.qcow2");
        cmd::run(
            std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&image.rootfs)
                .arg(&disk),
        )?;
        let guest = Guest {
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
        };
        guest.power_on(nics)?;
        Ok(guest)
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
        c.args(["-name", &self.name, "-accel", "tcg", "-machine", "q35"])
            .args(["-m", "1024", "-smp", "1", "-nographic", "-nodefaults"])
            .args(["-no-user-config"])
            // The DMI an EC2 instance shows: a system UUID (and serial) that start with "ec2",
            // by which cloud-init and ds-identify tell AWS.
            .args(["-smbios", &ec2_smbios(&self.name)])
            .arg("-kernel")
            .arg(&self.image.kernel)
            .arg("-initrd")
            .arg(&self.image.initrd)
            // net.ifnames=0: eth0, eth1... in attach order, as Amazon Linux names them.
            // panic=-1: a kernel panic reboots instead of hanging until the bound.
            // quiet: every console byte is an emulated UART write under TCG; without it a boot
            // prints about 1100 lines and costs about 12% more CPU (measured: 24.5 vs 21.1 s
            // of QEMU CPU time per boot, idle machine). systemd still prints failed and slow
            // jobs ("A start job is running..."), what a timed-out boot's console tail needs.
            .args([
                "-append",
                "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 quiet",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},format=qcow2,if=virtio,cache=unsafe",
                self.dir.join("disk.qcow2").display()
            ))
            .arg("-chardev")
            .arg(format!(
                "file,id=console,path={},append=on",
                self.dir.join("console.log").display()
            ))
            .args(["-serial", "chardev:console"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                self.dir.join("qmp.sock").display()
            ))
            .arg("-chardev")
            .arg(format!(
                "socket,id=qga,path={},server=on,wait=off",
                self.dir.join("qga.sock").display()
            ))
            .args(["-device", "virtio-serial-pci,id=vserial"])
            .args([
                "-device",
                "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
            ]);
        for i in 1..=ROOT_PORTS {
            c.arg("-device")
                .arg(format!("pcie-root-port,id=rp{i},slot={i},chassis={i}"));
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        *slots = Default::default();
        for (i, nic) in nics.iter().enumerate() {
            let port = nic.port();
            c.arg("-netdev")
                .arg(format!(
                    "tap,id=n-{port},ifname={port},script=no,downscript=no"
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,id=d-{port},netdev=n-{port},mac={},bus=rp{}",
                    nic.mac(),
                    i + 1
                ));
            slots[i] = Some(port.to_string());
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
        self.wait_agent(started, BOOT_TIMEOUT, None)?;
        Ok(started.elapsed())
    }

    /// Waits until the guest agent answers (and, with `old_boot`, from another boot).
    fn wait_agent(&self, since: Instant, bound: Duration, old_boot: Option<&str>) -> Result<()> {
        loop {
            self.check_alive()?;
            if self.agent.ping(Duration::from_secs(2)) {
                let new_boot = match old_boot {
                    None => true,
                    Some(old) => self.boot_id().is_ok_and(|id| id != old),
                };
                if new_boot {
                    // Its own bound, not what is left of the boot's: a guest agent that answered
                    // late on a loaded machine left 10 s for the rest of the boot (seen in a CI
                    // rehearsal). A unit that delays the boot is caught by the grid's own check
                    // (systemd-analyze, failed units), not by this wait.
                    return self.wait_booted(SETTLE_TIMEOUT);
                }
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

    /// Powers the guest off (ACPI, as an EC2 stop does) and waits for QEMU to exit.
    pub fn power_off(&self) -> Result<()> {
        let _ = self.qmp.call("system_powerdown", Value::Null, CALL_TIMEOUT);
        let deadline = Instant::now() + Duration::from_secs(120);
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
                    what: format!("guest {} to power off", self.name),
                    secs: 120,
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
