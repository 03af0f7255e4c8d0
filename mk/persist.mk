# Persistence (docs/persistence.md): the distributions' own network tools, used only by
# host-agent/tests/persist_*.rs inside the network namespaces they create, to prove what the
# agent writes: systemd-networkd and networkctl (systemd, dbus), netplan, ifup/ifdown, and
# NetworkManager's keyfile reader through libnm (gir1.2-nm-1.0, python3-gi). No service of
# theirs is enabled or started by the tests; package installs start none where policy-rc.d
# denies it (as on this project's machines).
APT_PACKAGES += $(filter-out $(APT_PACKAGES),systemd dbus util-linux netplan.io ifupdown gir1.2-nm-1.0 python3-gi)

.PHONY: persist-test
# Just the persistence proof: golden files (no root) and the real tools (root).
persist-test: setup-apt ## just the persistence proofs: golden files and the real tools (root)
	$(CARGO) test --workspace --locked --test persist_golden --test persist_networkd --test persist_netplan \
	  --test persist_ifupdown --test persist_nm_unit --test persist_safety
