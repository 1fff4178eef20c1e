#!/usr/bin/env bash
# fetch-chdb.sh fetches libchdb.so, the ClickHouse 26.7 engine as a shared library, which
# tokenwatch's embedded store (embedded/chdb) loads at run time.
#
# The library ships in the npm package @chdb/lib-linux-x64-gnu (a 178 MB tarball holding the
# 566 MB package/libchdb.so); npm's registry is reachable from these machines, so `npm pack`
# downloads it without installing anything into a project.
#
# Usage: scripts/fetch-chdb.sh
#   Idempotent: does nothing when the library is already in place and non-empty.
#   Atomic: downloads and unpacks in a temporary directory next to the target, then renames, so
#   an interrupted fetch never leaves a truncated library where the engine would load it.
#
# Environment (optional):
#   TOKENWATCH_CHDB_DIR   where libchdb.so goes ($HOME/.cache/tokenwatch/chdb); embedded/chdb
#                         looks there unless CHDB_LIB_PATH names another file
set -euo pipefail

readonly CHDB_PACKAGE="@chdb/lib-linux-x64-gnu@26.7.3-stable.1"
readonly chdb_dir="${TOKENWATCH_CHDB_DIR:-${HOME:-/root}/.cache/tokenwatch/chdb}"
readonly target="$chdb_dir/libchdb.so"

die() {
	echo "fetch-chdb.sh: $*" >&2
	exit 1
}

log() {
	echo "fetch-chdb.sh: $*" >&2
}

# need installs the Debian package that provides a missing command: a fresh machine may lack npm.
need() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null 2>&1 && return 0
	[ "$(id -u)" -eq 0 ] || die "$cmd is missing; install the Debian package $pkg (needs root)"
	log "installing $pkg for $cmd"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
	command -v "$cmd" >/dev/null 2>&1 || die "installed $pkg but $cmd is still not on PATH"
}

if [ -s "$target" ]; then
	log "libchdb.so already in $chdb_dir ($(du -h "$target" | cut -f1)); nothing to do"
	exit 0
fi

[ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] ||
	die "the npm package $CHDB_PACKAGE is for Linux x86_64 (glibc); this is $(uname -s) $(uname -m)"

need npm npm
need tar tar

mkdir -p "$chdb_dir"
# The temporary directory sits next to the target so the final mv is a rename on one filesystem.
tmp="$(mktemp -d "$chdb_dir/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log "downloading $CHDB_PACKAGE from the npm registry (about 178 MB)"
# A private npm cache inside tmp keeps a second 178 MB copy out of ~/.npm.
tarball="$(cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$CHDB_PACKAGE" | tail -n 1)"
[ -n "$tarball" ] && [ -s "$tmp/$tarball" ] || die "npm pack $CHDB_PACKAGE produced no tarball"

log "unpacking package/libchdb.so (about 566 MB)"
tar -xzf "$tmp/$tarball" -C "$tmp" package/libchdb.so ||
	die "$tarball has no package/libchdb.so; has the package layout changed?"
[ -s "$tmp/package/libchdb.so" ] || die "package/libchdb.so in $tarball is empty"
[ "$(head -c 4 "$tmp/package/libchdb.so" | od -An -c | tr -d ' ')" = '177ELF' ] ||
	die "package/libchdb.so in $tarball is not an ELF shared library"

mv -f "$tmp/package/libchdb.so" "$target"
log "installed $target ($(du -h "$target" | cut -f1))"
