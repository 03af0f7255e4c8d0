# VM lab (tests/src/lab/, tests/tests/lab.rs, tests/lab/): real Debian guests under QEMU (TCG;
# nested KVM does not work on these machines) in the simulated VPC, one grid row per network
# manager. The image is built from Debian packages and cached by content in target/lab/.
APT_PACKAGES += $(filter-out $(APT_PACKAGES),qemu-system-x86 debootstrap dnsmasq-base e2fsprogs curl)
TEST_STEPS   += test-lab
LAB_DIR      := $(ROOT)/target/lab
# Three guests at a time on a 2-core machine. TCG is single-threaded per guest, but a row spends
# much of its time waiting (lease renewals, reboots, RAs): with 9 rows, 3 at a time took 958 s
# where 2 at a time took 937 s for 7 rows (bench/RESULTS.md).
LAB_THREADS  ?= 3
# e.g. `make test-lab LAB_TESTS=grid_ifupdown`
LAB_TESTS    ?=

.PHONY: lab-setup lab-image test-lab

# Installing qemu-system-x86 removes a newer qemu-utils from backports (seen on these machines),
# so qemu-img is checked and installed after the rest.
lab-setup: setup-apt
	@command -v qemu-img >/dev/null || { echo "lab-setup: installing qemu-utils"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null; }

lab-image: lab-setup ## the VM lab's Debian 12 and 13 guest images (root; debootstrap, cached by content in target/lab/)
	SYMROUTE_LAB_DIR=$(LAB_DIR) tests/lab/image.sh bookworm $(LAB_DIR)
	SYMROUTE_LAB_DIR=$(LAB_DIR) tests/lab/image.sh trixie $(LAB_DIR)

test-lab: setup lab-image agent demo-build ## the VM lab grid: each network manager in a real guest (root); writes docs/lab-grid.md
	@rm -f $(LAB_DIR)/grid-*.md
	SYMROUTE_LAB_DIR=$(LAB_DIR) SYMROUTE_LAB_DIST=$(ROOT)/$(AGENT_DIST) \
	  $(CARGO) test --workspace --locked --test lab -- --ignored --skip bench_ --test-threads=$(LAB_THREADS) $(LAB_TESTS)
	@# A subset (LAB_TESTS) leaves docs/lab-grid.md, the whole grid, as it was.
	@[ -n "$(LAB_TESTS)" ] || { echo "# The VM lab's grid"; echo; \
	   echo "Written by \`make test-lab\` on $$(date -u +%F): Debian 12 guests (kernel $$(sed -n 's/^linux-image-cloud-amd64 //p' $(LAB_DIR)/bookworm/versions.txt), systemd $$(sed -n 's/^systemd //p' $(LAB_DIR)/bookworm/versions.txt), NetworkManager $$(sed -n 's/^network-manager //p' $(LAB_DIR)/bookworm/versions.txt), netplan $$(sed -n 's/^netplan.io //p' $(LAB_DIR)/bookworm/versions.txt), ifupdown $$(sed -n 's/^ifupdown //p' $(LAB_DIR)/bookworm/versions.txt)); the rows marked Debian 13 (kernel $$(sed -n 's/^linux-image-cloud-amd64 //p' $(LAB_DIR)/trixie/versions.txt), systemd $$(sed -n 's/^systemd //p' $(LAB_DIR)/trixie/versions.txt), netplan $$(sed -n 's/^netplan.io //p' $(LAB_DIR)/trixie/versions.txt), cloud-init $$(sed -n 's/^cloud-init //p' $(LAB_DIR)/trixie/versions.txt)); under QEMU/TCG, $$(nproc) cores."; \
	   echo "Each row is a promise proved in a booted guest; figures are this run's (TCG is slow: read them as relative)."; echo; \
	   for f in $(LAB_DIR)/grid-*.md; do cat $$f; echo; done; } > docs/lab-grid.md

BENCH_STEPS += bench-lab
bench-lab: lab-image agent demo-build ## the VM lab's figures: attach → first answer (document and on-host trigger), detach → clean, boot time with and without our files
	@mkdir -p bench/results
	SYMROUTE_LAB_DIR=$(LAB_DIR) SYMROUTE_LAB_DIST=$(ROOT)/$(AGENT_DIST) SYMROUTE_LAB_BENCH_OUT=$(ROOT)/bench/results/lab.md \
	  $(CARGO) test --workspace --locked --test lab -- --ignored --exact bench_boot_time_with_and_without_persisted_files
	SYMROUTE_LAB_DIR=$(LAB_DIR) SYMROUTE_LAB_DIST=$(ROOT)/$(AGENT_DIST) SYMROUTE_LAB_TRIGGER_OUT=$(ROOT)/bench/results/lab-trigger.md \
	  $(CARGO) test --workspace --locked --test lab -- --ignored --exact bench_trigger_attach_and_detach
