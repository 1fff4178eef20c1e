#!/usr/bin/env bash
# monitoring.sh installs the Prometheus, promtool and Alertmanager that tokenwatch's alert and
# dashboard tests run against: Debian's packages prometheus (2.42) and prometheus-alertmanager
# (0.25), the only source for them on these machines.
#
# Usage: scripts/monitoring.sh install|versions
#   install   install the packages unless promtool, prometheus and an Alertmanager are on PATH
#   versions  print the version of each binary
#
# The tests (internal/testkit) start their own instances on free loopback ports with temporary
# storage; the packages' own services are neither needed nor wanted. Debian's maintainer scripts
# start them (on :9090 and :9093) through invoke-rc.d, which on a machine without systemd runs
# their init scripts, so the install forbids service starts with a policy-rc.d while it runs.
set -euo pipefail

die() {
	echo "monitoring.sh: $*" >&2
	exit 1
}

log() {
	echo "monitoring.sh: $*" >&2
}

# alertmanager_bin prints the Alertmanager binary: Debian names it prometheus-alertmanager,
# upstream builds alertmanager.
alertmanager_bin() {
	command -v prometheus-alertmanager 2>/dev/null || command -v alertmanager 2>/dev/null
}

installed() {
	command -v prometheus >/dev/null 2>&1 &&
		command -v promtool >/dev/null 2>&1 &&
		alertmanager_bin >/dev/null
}

readonly policy_rc=/usr/sbin/policy-rc.d

# remove_policy removes the policy-rc.d that cmd_install wrote (never one that was there before).
remove_policy() {
	rm -f "$policy_rc"
}

cmd_install() {
	if installed; then
		log "prometheus, promtool and $(basename "$(alertmanager_bin)") already installed"
		return 0
	fi
	[ "$(id -u)" -eq 0 ] || die "installing Debian packages needs root; run: sudo $0 install"
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install Prometheus 2.42+ and Alertmanager 0.25+ by hand"

	if [ ! -e "$policy_rc" ]; then
		printf '#!/bin/sh\n# written by tokenwatch scripts/monitoring.sh during install\nexit 101\n' >"$policy_rc"
		chmod +x "$policy_rc"
		trap remove_policy EXIT
	fi

	log "installing prometheus and prometheus-alertmanager (Debian packages)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || die "apt-get update failed"
	# --no-install-recommends: the recommended node exporter is not used by the tests.
	apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null ||
		die "apt-get install prometheus prometheus-alertmanager failed"
	installed || die "packages installed but prometheus, promtool or alertmanager is still not on PATH"
	cmd_versions
}

cmd_versions() {
	installed || die "not installed: run $0 install"
	prometheus --version 2>&1 | head -n 1
	promtool --version 2>&1 | head -n 1
	"$(alertmanager_bin)" --version 2>&1 | head -n 1
}

case "${1:-}" in
install) cmd_install ;;
versions) cmd_versions ;;
*)
	echo "usage: $0 install|versions" >&2
	exit 2
	;;
esac
