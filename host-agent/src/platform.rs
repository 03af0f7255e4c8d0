//! Platforms the agent cannot serve, refused before anything changes, with a line that says
//! what to do instead.

use std::path::Path;

use crate::error::{Error, Result};

/// Bottlerocket runs the agent (through SSM) in its control or admin container, whose network
/// is not the host's and whose /etc is not the host's configuration; Bottlerocket configures
/// its ENIs through its own settings API.
pub(crate) fn bottlerocket(os_release: Option<&str>, admin_container_marker: bool) -> bool {
    admin_container_marker
        || os_release.is_some_and(|t| {
            t.lines()
                .any(|l| l.trim() == "ID=bottlerocket" || l.trim() == "ID=\"bottlerocket\"")
        })
}

/// Refuses the run where nothing it does could work: Bottlerocket, or (when persisting) a
/// read-only filesystem under `etc`.
pub fn check(root: &Path, persisting: bool) -> Result<()> {
    let os_release = std::fs::read_to_string(root.join("etc/os-release")).ok();
    if bottlerocket(os_release.as_deref(), root.join(".bottlerocket").exists()) {
        return Err(Error::Usage(
            "this is Bottlerocket: symroute would run in a container whose network and /etc are \
             not the host's; configure ENIs through Bottlerocket's settings (apiclient) instead"
                .into(),
        ));
    }
    let etc = root.join("etc");
    if persisting && etc.is_dir() && read_only(&etc) {
        return Err(Error::Usage(format!(
            "{} is on a read-only filesystem: nothing can be persisted there; run with \
             --persist none for live routing only (lost at reboot)",
            etc.display()
        )));
    }
    Ok(())
}

fn read_only(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a plain struct statvfs fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    rc == 0 && (st.f_flag & libc::ST_RDONLY) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bottlerocket_is_recognised_by_os_release_or_the_admin_container() {
        assert!(bottlerocket(
            Some("NAME=Bottlerocket\nID=bottlerocket\n"),
            false
        ));
        assert!(bottlerocket(Some("ID=\"bottlerocket\"\n"), false));
        assert!(bottlerocket(None, true));
        assert!(!bottlerocket(Some("ID=amzn\nID_LIKE=\"fedora\"\n"), false));
        assert!(!bottlerocket(None, false));
    }

    #[test]
    fn a_writable_root_passes() {
        let dir = std::env::temp_dir().join(format!("symroute-platform-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        assert!(check(&dir, true).is_ok());
        std::fs::write(dir.join("etc/os-release"), "ID=bottlerocket\n").unwrap();
        let err = check(&dir, false).unwrap_err().to_string();
        assert!(err.contains("Bottlerocket"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
