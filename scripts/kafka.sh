#!/usr/bin/env bash
# kafka.sh fetches and runs Apache Kafka 4.4.0 for tokenwatch's integration tests and demo.
#
# There is no Docker engine and no Kafka package on these machines, but Maven Central is reachable,
# so the broker is assembled from its jars (org.apache.kafka:kafka_2.13:4.4.0 and its runtime
# dependencies) and run with the machine's Java 17 as a single KRaft node on loopback.
#
# Usage: scripts/kafka.sh fetch|start|stop|status|run
#   fetch   download the jars into $TOKENWATCH_KAFKA_DIR/libs (skipped when already there)
#   start   format storage if needed, start the broker in the background, wait until it serves
#   stop    stop the broker started by `start` (pid file), forcefully after 30 s
#   status  say whether the broker of the pid file runs; exit 1 when it does not
#   run     format storage if needed and exec the broker in the foreground (the process stays
#           this script's pid); internal/testkit uses it to own the broker's lifetime
#
# Environment (all optional):
#   TOKENWATCH_KAFKA_DIR   cache holding libs/ and the default state dir (~/.cache/tokenwatch/kafka)
#   KAFKA_STATE_DIR        server.properties, data/, kafka.log, kafka.pid ($TOKENWATCH_KAFKA_DIR/run)
#   KAFKA_PORT             client listener on 127.0.0.1 (19092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (19093)
#   KAFKA_START_TIMEOUT    seconds `start` waits for the broker (90)
#   KAFKA_HEAP_OPTS        JVM heap flags (-Xms256m -Xmx768m)
#   KAFKA_JVM_OPTS         extra JVM flags
set -euo pipefail

readonly KAFKA_VERSION=4.4.0
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly script_dir
readonly kafka_dir="${TOKENWATCH_KAFKA_DIR:-${HOME:-/root}/.cache/tokenwatch/kafka}"
readonly libs_dir="$kafka_dir/libs"
readonly state_dir="${KAFKA_STATE_DIR:-$kafka_dir/run}"
readonly data_dir="$state_dir/data"
readonly pid_file="$state_dir/kafka.pid"
readonly log_file="$state_dir/kafka.log"
readonly port="${KAFKA_PORT:-19092}"
readonly controller_port="${KAFKA_CONTROLLER_PORT:-19093}"
readonly start_timeout="${KAFKA_START_TIMEOUT:-90}"
# Kafka's log configuration: everything to stdout, which start and run redirect into a file.
readonly log4j_opt="-Dlog4j2.configurationFile=$script_dir/kafka/log4j2.properties"

die() {
	echo "kafka.sh: $*" >&2
	exit 1
}

log() {
	echo "kafka.sh: $*" >&2
}

apt_updated=0
# need installs the Debian package that provides a missing command: a fresh machine has neither
# Java nor Maven, and the project's own scripts must install what it needs.
need() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null 2>&1 && return 0
	[ "$(id -u)" -eq 0 ] || die "$cmd is missing; install the Debian package $pkg (needs root)"
	log "installing $pkg for $cmd"
	if [ "$apt_updated" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
	command -v "$cmd" >/dev/null 2>&1 || die "installed $pkg but $cmd is still not on PATH"
}

fetched() {
	[ -f "$libs_dir/kafka_2.13-$KAFKA_VERSION.jar" ] && [ -f "$libs_dir/log4j-slf4j-impl-2.25.5.jar" ]
}

cmd_fetch() {
	if fetched; then
		log "Kafka $KAFKA_VERSION already in $libs_dir"
		return 0
	fi
	need java openjdk-17-jre-headless
	need mvn maven
	mkdir -p "$kafka_dir"
	# Copy into a temporary folder and rename, so an interrupted fetch never looks complete.
	local tmp="$kafka_dir/libs.partial"
	rm -rf "$tmp"
	log "fetching Kafka $KAFKA_VERSION from Maven Central into $libs_dir"
	# -Dmaven.repo.local is left alone so later fetches reuse ~/.m2.
	local mvn_log="$kafka_dir/fetch.log"
	if ! mvn -q -B -Dstyle.color=never -f "$script_dir/kafka/pom.xml" \
		dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
		tail -n 30 "$mvn_log" >&2
		die "mvn could not fetch Kafka $KAFKA_VERSION (is Maven Central reachable?); full output in $mvn_log"
	fi
	rm -rf "$libs_dir"
	mv "$tmp" "$libs_dir"
	log "fetched $(find "$libs_dir" -name '*.jar' | wc -l) jars"
}

# random_cluster_id makes a KRaft cluster id without starting a JVM for `random-uuid`: Kafka's
# Uuid is 16 bytes in unpadded URL-safe base64; a leading '-' would read as a flag, so retry.
random_cluster_id() {
	local id
	while :; do
		id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
		[ "${id:0:1}" != "-" ] && break
	done
	echo "$id"
}

write_config() {
	mkdir -p "$data_dir"
	# One node by default; cluster-start sets the node id, the static voters and the replication.
	local node_id="${KAFKA_NODE_ID:-1}" replication="${KAFKA_REPLICATION:-1}" quorum min_isr=1
	if [ "$replication" -gt 1 ]; then
		min_isr=2
	fi
	if [ -n "${KAFKA_VOTERS:-}" ]; then
		quorum="controller.quorum.voters=$KAFKA_VOTERS"
	else
		quorum="controller.quorum.bootstrap.servers=127.0.0.1:$controller_port"
	fi
	cat >"$state_dir/server.properties" <<EOF
# Written by scripts/kafka.sh: a KRaft node on loopback for tests and the demo.
process.roles=broker,controller
node.id=$node_id
$quorum
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir

# Topics appear on first use with as many partitions as the pipeline's tests expect.
auto.create.topics.enable=true
num.partitions=6
default.replication.factor=$replication
min.insync.replicas=$min_isr

# The internal topics: one replica on one node; three (two in sync) in a cluster.
offsets.topic.replication.factor=$replication
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr

# Tests create consumer groups often: no rebalance delay, and a small offsets topic so the first
# group does not wait for 50 partitions to be created.
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=6
EOF
}

format_storage() {
	if [ -f "$data_dir/meta.properties" ]; then
		return 0
	fi
	if [ -n "${KAFKA_VOTERS:-}" ]; then
		# A node of a cluster with static voters: every node formats with the cluster's id.
		java -cp "$libs_dir/*" "$log4j_opt" kafka.tools.StorageTool format \
			--cluster-id "$KAFKA_CLUSTER_ID" --config "$state_dir/server.properties" ||
			die "formatting KRaft storage in $data_dir failed"
		return 0
	fi
	local cluster_id
	cluster_id="$(random_cluster_id)"
	java -cp "$libs_dir/*" "$log4j_opt" kafka.tools.StorageTool format \
		--cluster-id "$cluster_id" --config "$state_dir/server.properties" --standalone ||
		die "formatting KRaft storage in $data_dir failed"
}

# cmd_run formats and then replaces this shell with the broker, so whoever started the script
# (start below, or a Go test) holds the broker's own pid and can stop it directly.
cmd_run() {
	fetched || die "Kafka jars missing in $libs_dir: run scripts/kafka.sh fetch"
	need java openjdk-17-jre-headless
	mkdir -p "$state_dir"
	write_config
	format_storage
	# shellcheck disable=SC2086 # the *_OPTS variables hold several flags on purpose
	exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-Djava.awt.headless=true "$log4j_opt" ${KAFKA_JVM_OPTS:-} \
		-cp "$libs_dir/*" kafka.Kafka "$state_dir/server.properties"
}

running_pid() {
	[ -f "$pid_file" ] || return 1
	local pid
	pid="$(cat "$pid_file")"
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
	echo "$pid"
}

port_answers() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_start() {
	local pid
	if pid="$(running_pid)"; then
		log "already running (pid $pid, 127.0.0.1:$port)"
		return 0
	fi
	fetched || cmd_fetch
	if port_answers "$port"; then
		die "port $port is already in use by another process; set KAFKA_PORT"
	fi
	if port_answers "$controller_port"; then
		die "controller port $controller_port is already in use; set KAFKA_CONTROLLER_PORT"
	fi
	mkdir -p "$state_dir"
	: >"$log_file"
	# setsid detaches the broker from this terminal's process group, so a Ctrl-C in the shell
	# that ran `start` does not reach it; the exec in `run` keeps the pid the broker's own.
	setsid "$script_dir/kafka.sh" run >>"$log_file" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$pid_file"
	local started=$SECONDS
	while :; do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pid_file"
			log "Kafka exited during start-up; last lines of $log_file:"
			tail -n 40 "$log_file" >&2
			exit 1
		fi
		# The listener can be bound before the broker serves; the server logs this line once
		# the broker is unfenced and its request handlers run.
		if port_answers "$port" && grep -q 'Kafka Server started' "$log_file"; then
			break
		fi
		if [ $((SECONDS - started)) -ge "$start_timeout" ]; then
			log "Kafka did not answer on 127.0.0.1:$port within ${start_timeout}s; last lines of $log_file:"
			tail -n 40 "$log_file" >&2
			cmd_stop || true
			exit 1
		fi
		sleep 0.2
	done
	log "Kafka $KAFKA_VERSION serving on 127.0.0.1:$port (pid $pid, started in $((SECONDS - started))s, log $log_file)"
}

cmd_stop() {
	local pid
	if ! pid="$(running_pid)"; then
		rm -f "$pid_file"
		log "not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	local i
	for i in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid ignored SIGTERM for 30 s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pid_file"
	log "stopped (pid $pid)"
}

cmd_status() {
	local pid
	if pid="$(running_pid)"; then
		echo "Kafka $KAFKA_VERSION running: pid $pid, 127.0.0.1:$port, log $log_file"
		return 0
	fi
	echo "Kafka not running"
	return 1
}

readonly cluster_dir="${KAFKA_CLUSTER_DIR:-$kafka_dir/cluster}"
readonly cluster_port="${KAFKA_CLUSTER_PORT:-29092}"

# cluster_nodes is the node count of the cluster in $cluster_dir (written by cluster-start).
cluster_nodes() {
	cat "$cluster_dir/nodes" 2>/dev/null || echo 3
}

# cmd_cluster_start starts the nodes of a KRaft cluster that are not running (all of them the
# first time, one stopped by cluster-stop later) and waits until each serves. Every node is a
# broker and a controller with static voters; they wait for a quorum, so all start before any
# is waited for.
cmd_cluster_start() {
	local n="${1:-}" i voters="" id dir pid bootstrap=""
	if [ -z "$n" ]; then
		n="$(cluster_nodes)"
	fi
	[[ "$n" =~ ^[1-9]$ ]] || die "cluster-start: want 1 to 9 nodes, got '$n'"
	fetched || cmd_fetch
	need java openjdk-17-jre-headless
	mkdir -p "$cluster_dir"
	echo "$n" >"$cluster_dir/nodes"
	if [ ! -f "$cluster_dir/cluster.id" ]; then
		random_cluster_id >"$cluster_dir/cluster.id"
	fi
	id="$(cat "$cluster_dir/cluster.id")"
	for i in $(seq 1 "$n"); do
		voters="${voters:+$voters,}$i@127.0.0.1:$((cluster_port + 100 + i - 1))"
	done
	local started_nodes=()
	for i in $(seq 1 "$n"); do
		dir="$cluster_dir/node$i"
		mkdir -p "$dir"
		bootstrap="${bootstrap:+$bootstrap,}127.0.0.1:$((cluster_port + i - 1))"
		if [ -f "$dir/kafka.pid" ] && kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
			continue
		fi
		: >"$dir/kafka.log"
		KAFKA_STATE_DIR="$dir" KAFKA_PORT=$((cluster_port + i - 1)) KAFKA_CONTROLLER_PORT=$((cluster_port + 100 + i - 1)) \
			KAFKA_NODE_ID="$i" KAFKA_VOTERS="$voters" KAFKA_CLUSTER_ID="$id" KAFKA_REPLICATION=$((n < 3 ? n : 3)) \
			KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}" \
			setsid "$script_dir/kafka.sh" run >>"$dir/kafka.log" 2>&1 </dev/null &
		echo $! >"$dir/kafka.pid"
		started_nodes+=("$i")
	done
	local started=$SECONDS
	for i in "${started_nodes[@]}"; do
		dir="$cluster_dir/node$i"
		pid="$(cat "$dir/kafka.pid")"
		until port_answers $((cluster_port + i - 1)) && grep -q 'Kafka Server started' "$dir/kafka.log"; do
			if ! kill -0 "$pid" 2>/dev/null; then
				log "node $i exited during start-up; last lines of $dir/kafka.log:"
				tail -n 40 "$dir/kafka.log" >&2
				exit 1
			fi
			if [ $((SECONDS - started)) -ge "$start_timeout" ]; then
				log "node $i did not serve within ${start_timeout}s; last lines of $dir/kafka.log:"
				tail -n 40 "$dir/kafka.log" >&2
				exit 1
			fi
			sleep 0.2
		done
	done
	log "Kafka $KAFKA_VERSION cluster of $n nodes serving on $bootstrap (started in $((SECONDS - started))s, state $cluster_dir)"
	echo "$bootstrap"
}

# cmd_cluster_stop stops every node of the cluster, or node $KAFKA_NODE alone (with
# KAFKA_SIGNAL=KILL, as a crash).
cmd_cluster_stop() {
	local i j pid dir nodes
	if [ -n "${KAFKA_NODE:-}" ]; then
		nodes="$KAFKA_NODE"
	else
		nodes="$(seq 1 "$(cluster_nodes)")"
	fi
	for i in $nodes; do
		dir="$cluster_dir/node$i"
		[ -f "$dir/kafka.pid" ] || continue
		pid="$(cat "$dir/kafka.pid")"
		if kill -0 "$pid" 2>/dev/null; then
			kill -"${KAFKA_SIGNAL:-TERM}" "$pid" 2>/dev/null || true
			for j in $(seq 1 150); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.2
			done
			kill -KILL "$pid" 2>/dev/null || true
			log "node $i stopped (pid $pid, in about $((j / 5)) s)"
		fi
		rm -f "$dir/kafka.pid"
	done
}

case "${1:-}" in
fetch) cmd_fetch ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
run) cmd_run ;;
cluster-start) cmd_cluster_start "${2:-}" ;;
cluster-stop) cmd_cluster_stop ;;
*)
	echo "usage: $0 fetch|start|stop|status|run|cluster-start [N]|cluster-stop" >&2
	exit 2
	;;
esac
