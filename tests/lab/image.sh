#!/bin/bash
# Builds the VM lab's guest image from Debian packages, cached by content.
#
#   tests/lab/image.sh SUITE OUT_DIR      e.g. tests/lab/image.sh bookworm target/lab
#
# Writes OUT_DIR/<key>/{vmlinuz,initrd.img,rootfs.raw,versions.txt} and points OUT_DIR/SUITE at
# it. The key hashes this script, the package list and the mirror's InRelease `Date:` (it
# changes whenever any package version does), so a rebuild happens exactly when the content would
# differ. Needs root (debootstrap, chroot); nothing is mounted: mkfs.ext4 -d turns the tree into
# a disk. Prints the image directory on its last line.
set -euo pipefail

suite=${1:?usage: image.sh SUITE OUT_DIR}
out=${2:?usage: image.sh SUITE OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
list="$here/packages-$suite.txt"
mirror=${SYMROUTE_LAB_MIRROR:-http://deb.debian.org/debian}

[ -r "$list" ] || { echo "image.sh: no package list $list for suite '$suite'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "image.sh: needs root (debootstrap and chroot)" >&2; exit 2; }

packages=$(grep -v '^#' "$list" | grep -v '^$' | paste -sd, -)
release_date=$(curl -fsS --max-time 30 "$mirror/dists/$suite/InRelease" | sed -n 's/^Date: //p' | head -1) ||
    { echo "image.sh: cannot read $mirror/dists/$suite/InRelease" >&2; exit 1; }
[ -n "$release_date" ] || { echo "image.sh: $mirror/dists/$suite/InRelease has no Date:" >&2; exit 1; }
key=$(printf '%s\n' "$suite" "$mirror" "$release_date" "$packages" | cat - "$0" | sha256sum | cut -c1-16)
dir="$out/$suite-$key"

mkdir -p "$out"
if [ -s "$dir/rootfs.raw" ] && [ -s "$dir/versions.txt" ]; then
    ln -sfn "$(basename "$dir")" "$out/$suite"
    echo "$dir"
    exit 0
fi

tmp="$out/.build-$suite-$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out"/.build-"$suite"-*
mkdir -p "$tmp"
tree="$tmp/tree"
echo "image.sh: debootstrap $suite ($release_date) into $tree" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$tree" "$mirror" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -20 "$tmp/debootstrap.log" >&2; echo "image.sh: debootstrap failed (log above)" >&2; exit 1; }

# The guest as a fresh cloud instance would be before its network is configured: no network
# manager enabled (each lab test enables the one it proves), a root file system from /dev/vda,
# an empty machine-id (made at first boot), the serial console for the boot log.
for unit in networking.service NetworkManager.service NetworkManager-wait-online.service \
            NetworkManager-dispatcher.service systemd-networkd.service systemd-networkd.socket \
            systemd-networkd-wait-online.service systemd-resolved.service wpa_supplicant.service \
            apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service; do
    chroot "$tree" systemctl disable "$unit" >/dev/null 2>&1 || true
done
# amazon-ec2-net-utils is there for the coexistence row only (where the suite's list has it):
# its udev rule, networkd file and units wait under /usr/local/lib/lab/net-utils (same paths
# below it), where nothing reads them; that row puts them back. (Its rule and file match EC2's
# drivers, not the lab's virtio NICs: the row adds virtio_net to both, the one change it makes
# to the real package.)
if grep -qx amazon-ec2-net-utils "$list"; then
    stash="$tree/usr/local/lib/lab/net-utils"
    for f in usr/lib/udev/rules.d/99-vpc-policy-routes.rules usr/lib/systemd/network/80-ec2.network \
             usr/lib/systemd/system/policy-routes@.service \
             usr/lib/systemd/system/refresh-policy-routes@.service \
             usr/lib/systemd/system/refresh-policy-routes@.timer; do
        mkdir -p "$stash/$(dirname "$f")"
        mv "$tree/$f" "$stash/$f"
    done
fi
# cloud-init is there for its coexistence row only: its documented marker file keeps it from
# running (its generator and ds-identify read it); that row removes the file and reboots.
if grep -qx cloud-init "$list"; then
    touch "$tree/etc/cloud/cloud-init.disabled"
fi
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$tree/etc/fstab"
echo lab >"$tree/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lab\n' >"$tree/etc/hosts"
: >"$tree/etc/machine-id"
rm -f "$tree/var/lib/dbus/machine-id"
# journald keeps the boot log across reboots (the tests read it for boot times).
mkdir -p "$tree/var/log/journal"
chroot "$tree" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/versions.txt"

cp -L "$tree/vmlinuz" "$tmp/vmlinuz"
cp -L "$tree/initrd.img" "$tmp/initrd.img"
truncate -s 3G "$tmp/rootfs.raw"
mkfs.ext4 -q -F -L root -d "$tree" "$tmp/rootfs.raw"
rm -rf "$tree"

rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
rm -f "$dir/debootstrap.log"
ln -sfn "$(basename "$dir")" "$out/$suite"
echo "$dir"
