//! The lab's guest image, as `make lab-image` (tests/lab/image.sh) leaves it.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where `make lab-image` writes images: `target/lab` of this repository, or
/// `$SYMROUTE_LAB_DIR`.
pub fn lab_dir() -> PathBuf {
    std::env::var_os("SYMROUTE_LAB_DIR")
        .map_or_else(|| crate::repo_root().join("target/lab"), PathBuf::from)
}

/// A bootable guest: the Debian cloud kernel, its initrd and a raw ext4 root file system.
#[derive(Clone, Debug)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    /// `package version` lines of everything installed (the image's content).
    pub versions: PathBuf,
}

impl Image {
    /// The current image of Debian `suite` (`bookworm`), or a one-line error naming the make
    /// target that builds it.
    pub fn find(suite: &str) -> Result<Image> {
        let dir = lab_dir().join(suite);
        let image = Image {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            rootfs: dir.join("rootfs.raw"),
            versions: dir.join("versions.txt"),
        };
        for f in [&image.kernel, &image.initrd, &image.rootfs, &image.versions] {
            if !f.is_file() {
                return Err(Error::invalid(
                    "lab image",
                    f.display().to_string(),
                    "is missing: run `make lab-image` (root; debootstrap from the Debian mirror)",
                ));
            }
        }
        Ok(image)
    }
}
