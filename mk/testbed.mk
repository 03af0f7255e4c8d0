# Testbed (tests/, crate symroute-testbed): simulated VPC in network namespaces + IMDSv2 stand-in.
# Its tests run inside `cargo test --workspace`; it only needs these tools on the machine.
APT_PACKAGES += $(filter-out $(APT_PACKAGES),iproute2 iputils-ping nftables radvd curl procps)

.PHONY: testbed-test
# Just the testbed's own proof (root: creates network namespaces).
testbed-test: setup-apt ## just the testbed's own proof (root)
	$(CARGO) test --locked -p symroute-testbed
