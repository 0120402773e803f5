#!/usr/bin/env bash
# A real multi-node Docker Swarm on this one machine, for the docker-swarm plugin's cluster
# tests and benchmarks (run it as `scripts/dev-env.sh cluster ...`):
#
#   cluster up [N] [--managers 1|3]  N (default 3) separate dockerds, each in its own network
#                                    namespace, UTS namespace (hostname fpc-nK), data root, exec
#                                    root and socket, joined to one swarm (node 1 initialises it;
#                                    with --managers 3 nodes 1-3 are managers). Last stdout line:
#                                    CLUSTER_DOCKER_HOST=unix://.../n1.sock (a manager).
#                                    Seconds when the same cluster is up already.
#   cluster down                     stops and removes everything `up` made (processes by PID,
#                                    namespaces, veths, bridge, data roots); nothing else
#   cluster status                   nodes, their engines, the swarm (exit 0 when all answer)
#   cluster stop-node K              kills node K's engine hard, with its containers (a node
#                                    that dies); the swarm sees it go down
#   cluster start-node K             starts node K's engine again; it rejoins the swarm
#   cluster cut-registry K           node K can no longer reach the registry
#   cluster restore-registry K       ... and again can
#   cluster host K                   prints node K's DOCKER_HOST
#
# The network: a hub namespace fpc-hub holds the bridge fpcbr0 (so the root namespace's
# iptables, where the main engine's FORWARD policy is DROP, never see node-to-node traffic); the
# root namespace joins it as 10.231.0.1 (veth fpc-root), node K is 10.231.0.(10+K) on its eth0.
# Payload images are named 127.0.0.1:5000/...: each node runs a socat on its own 127.0.0.1:5000
# that forwards to 10.231.0.1:5000, where one socat in the root namespace forwards to the
# registry on 127.0.0.1:5000. Swarm's ingress routing mesh needs IPVS, which this kernel
# lacks: publish in host mode. The main engine is never touched.
#
# State (pid files, logs, data and exec roots) lives in target/dev-env/cluster/; the machine-wide
# owner of the cluster (only one fits the addresses) is recorded in /run/fpc-cluster.owner; a
# cluster another checkout brought up is used as it is, and only that checkout takes it down.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OWN_STATE="$ROOT/target/dev-env/cluster"
OWNER_FILE=/run/fpc-cluster.owner
STATE=$OWN_STATE
# Only one cluster fits the addresses: one that another checkout brought up is the cluster
# (up reuses it, status, host, stop-node ... act on it), but only its owner may bring it down.
if [[ -f $OWNER_FILE ]]; then
	other=$(<"$OWNER_FILE")
	if [[ $other != "$STATE" && -f $other/nodes ]]; then STATE=$other; fi
fi
HUB=fpc-hub
BRIDGE=fpcbr0
NET=10.231.0
ROOT_ADDR=$NET.1
REGISTRY=127.0.0.1:5000
ADDR_POOL=10.233.0.0/16

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
bad() {
	log "error: $*"
	exit 2
}

poll() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

ns() { echo "fpc-n$1"; }
addr() { echo "$NET.$((10 + $1))"; }
sock() { echo "$STATE/n$1.sock"; }
host_of() { echo "unix://$(sock "$1")"; }
dk() {
	local k=$1
	shift
	timeout "${DK_TIMEOUT:-30}" docker -H "$(host_of "$k")" "$@"
}

# alive FILE WORD: the pid in FILE runs a process whose command line mentions WORD.
alive() {
	local pid
	[[ -f $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	[[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$2"* ]]
}

# kill_pidfile FILE WORD: SIGKILL the process of FILE (if it is still ours), wait until gone.
kill_pidfile() {
	local pid deadline
	if alive "$1" "$2"; then
		pid=$(<"$1")
		kill -KILL "$pid" 2>/dev/null || true
		deadline=$((SECONDS + 10))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
	fi
	rm -f "$1"
}

nodes_count() { [[ -f $STATE/nodes ]] && cat "$STATE/nodes" || echo 0; }
managers_count() { [[ -f $STATE/managers ]] && cat "$STATE/managers" || echo 1; }

engine_answers() { DK_TIMEOUT=5 dk "$1" version --format '{{.Server.Version}}'; }

registry_answers() {
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/5000" && printf "GET /v2/ HTTP/1.0\r\n\r\n" >&3 && head -c 12 <&3' 2>/dev/null | grep -q ' 200'
}

need_tools() {
	local missing=() t
	for t in ip dockerd docker unshare nsenter; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
	if ! command -v socat >/dev/null 2>&1; then
		if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
			log "installing socat with apt-get (the registry forwarders)"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends socat >&2 ||
				{ DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends socat >&2; } ||
				die "apt-get install socat failed"
		else
			missing+=(socat)
		fi
	fi
	((${#missing[@]} == 0)) || die "missing: ${missing[*]} (Debian: apt-get install iproute2 docker.io util-linux socat)"
	[[ $(id -u) == 0 ]] || die "only root can create network namespaces and start engines: run it with sudo"
}

# --- the network ------------------------------------------------------------------------------

net_up() {
	local n=$1 k
	if ! ip netns list | grep -qw "$HUB"; then
		ip netns add "$HUB"
		ip -n "$HUB" link set lo up
		# Bridged frames must not go through iptables, not even this namespace's (empty) ones.
		ip netns exec "$HUB" sh -c 'for f in /proc/sys/net/bridge/bridge-nf-call-ip*tables; do [ -w "$f" ] && echo 0 >"$f"; done; true'
		ip -n "$HUB" link add "$BRIDGE" type bridge
		ip -n "$HUB" link set "$BRIDGE" up
	fi
	if ! ip link show fpc-root >/dev/null 2>&1; then
		ip link add fpc-root type veth peer name fpc-hroot netns "$HUB"
		ip -n "$HUB" link set fpc-hroot master "$BRIDGE" up
		ip addr add "$ROOT_ADDR/24" dev fpc-root
		ip link set fpc-root up
	fi
	for ((k = 1; k <= n; k++)); do
		ip netns list | grep -qw "$(ns "$k")" && continue
		ip netns add "$(ns "$k")"
		ip -n "$(ns "$k")" link set lo up
		ip link add "fpc-h$k" netns "$HUB" type veth peer name eth0 netns "$(ns "$k")"
		ip -n "$HUB" link set "fpc-h$k" master "$BRIDGE" up
		ip -n "$(ns "$k")" addr add "$(addr "$k")/24" dev eth0
		ip -n "$(ns "$k")" link set eth0 up
		ip -n "$(ns "$k")" route add default via "$ROOT_ADDR"
	done
}

net_down() {
	local k name
	for name in $(ip netns list | awk '{print $1}'); do
		[[ $name =~ ^fpc-n[0-9]+$ ]] && ip netns del "$name"
	done
	ip link show fpc-root >/dev/null 2>&1 && ip link del fpc-root
	ip netns list | grep -qw "$HUB" && ip netns del "$HUB"
	true
}

# --- registry forwarders ----------------------------------------------------------------------

forward_root_up() {
	alive "$STATE/socat-root.pid" socat && return 0
	setsid socat "TCP-LISTEN:5000,bind=$ROOT_ADDR,fork,reuseaddr" "TCP:$REGISTRY" \
		>>"$STATE/socat-root.log" 2>&1 </dev/null 8>&- 9>&- &
	echo $! >"$STATE/socat-root.pid"
}

forward_node_up() {
	local k=$1
	alive "$STATE/n$k/socat.pid" socat && return 0
	setsid ip netns exec "$(ns "$k")" socat "TCP-LISTEN:5000,bind=127.0.0.1,fork,reuseaddr" "TCP:$ROOT_ADDR:5000" \
		>>"$STATE/n$k/socat.log" 2>&1 </dev/null 8>&- 9>&- &
	echo $! >"$STATE/n$k/socat.pid"
}

node_registry_answers() {
	ip netns exec "$(ns "$1")" timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/5000" && printf "GET /v2/ HTTP/1.0\r\n\r\n" >&3 && head -c 12 <&3' 2>/dev/null | grep -q ' 200'
}

# --- engines ----------------------------------------------------------------------------------

engine_start() {
	local k=$1 d
	d="$STATE/n$k"
	alive "$d/dockerd.pid" dockerd && return 0
	mkdir -p "$d/data" "$d/exec"
	rm -f "$(sock "$k")"
	# nsenter, not `ip netns exec`, which mounts a new /sys without the cgroup hierarchies.
	# unshare --uts: a hostname of its own, which is the swarm node's name; --mount: the engine's
	# mounts stay in its own mount namespace and vanish with its processes. --cgroup-parent: its
	# containers' cgroups apart from the main engine's, so a node's death can kill them all.
	setsid nsenter "--net=/run/netns/$(ns "$k")" unshare --uts --mount --propagation slave -- sh -c 'hostname "$0" && exec "$@"' "$(ns "$k")" \
		dockerd --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd-own.pid" \
		--host "$(host_of "$k")" --cgroup-parent "/$(ns "$k")" --log-level warn \
		--insecure-registry "$REGISTRY" --insecure-registry "$ROOT_ADDR:5000" \
		>>"$d/dockerd.log" 2>&1 </dev/null 8>&- 9>&- &
	echo $! >"$d/dockerd.pid"
}

engine_wait() {
	local k=$1
	local deadline=$((SECONDS + 120))
	until engine_answers "$k" >/dev/null 2>&1; do
		alive "$STATE/n$k/dockerd.pid" dockerd || break
		((SECONDS < deadline)) || break
		sleep 0.2
	done
	if ! engine_answers "$k" >/dev/null 2>&1; then
		tail -n 20 "$STATE/n$k/dockerd.log" >&2 || true
		die "node $k's dockerd did not answer within 120 s (log: $STATE/n$k/dockerd.log)"
	fi
}

# Every process of node K: its engine, containerd, the shims and what runs in its containers.
node_pids() {
	local k=$1 f
	ip netns pids "$(ns "$k")" 2>/dev/null || true
	for f in /sys/fs/cgroup/pids/"$(ns "$k")"/*/cgroup.procs /sys/fs/cgroup/pids/"$(ns "$k")"/cgroup.procs; do
		if [[ -f $f ]]; then cat "$f"; fi
	done
	true
}

# engine_kill K: node K dies: SIGKILL for all its processes (its registry forwarder too,
# unless KEEP_FORWARDER=1), then its containers' cgroups go.
engine_kill() {
	local k=$1 pids deadline d
	d="$STATE/n$k"
	deadline=$((SECONDS + 15))
	while :; do
		pids=$(node_pids "$k" | sort -u)
		if [[ ${KEEP_FORWARDER:-} == 1 ]] && [[ -f $d/socat.pid ]]; then
			pids=$(grep -vx "$(<"$d/socat.pid")" <<<"$pids" || true)
			# socat's per-connection children are in the namespace too: keep them.
			pids=$(for p in $pids; do [[ $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) == socat* ]] || echo "$p"; done)
		fi
		[[ -z $pids ]] && break
		# shellcheck disable=SC2086
		kill -KILL $pids 2>/dev/null || true
		((SECONDS < deadline)) || die "node $k: processes $pids do not die"
		sleep 0.1
	done
	rm -f "$d/dockerd.pid" "$d/dockerd-own.pid"
	[[ ${KEEP_FORWARDER:-} == 1 ]] || rm -f "$d/socat.pid"
	# Empty cgroups left by the killed containers (children first).
	local c
	for c in /sys/fs/cgroup/*/"$(ns "$k")"; do
		[[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	true
}

# --- the swarm --------------------------------------------------------------------------------

swarm_form() {
	local n=$1 managers=$2 k wtoken mtoken state
	state=$(dk 1 info --format '{{.Swarm.LocalNodeState}}')
	if [[ $state != active ]]; then
		log "initialising the swarm on node 1 ($(addr 1))"
		dk 1 swarm init --advertise-addr "$(addr 1)" --listen-addr "$(addr 1):2377" \
			--default-addr-pool "$ADDR_POOL" --default-addr-pool-mask-length 24 >/dev/null
	fi
	wtoken=$(dk 1 swarm join-token -q worker)
	mtoken=$(dk 1 swarm join-token -q manager)
	for ((k = 2; k <= n; k++)); do
		[[ $(dk "$k" info --format '{{.Swarm.LocalNodeState}}') == active ]] && continue
		local token=$wtoken role=worker
		if ((k <= managers)); then token=$mtoken role=manager; fi
		log "node $k ($(addr "$k")) joins as $role"
		DK_TIMEOUT=60 dk "$k" swarm join --token "$token" --advertise-addr "$(addr "$k")" \
			--listen-addr "$(addr "$k"):2377" "$(addr 1):2377" >/dev/null
	done
}

ready_nodes() { dk 1 node ls --format '{{.Hostname}} {{.Status}}' 2>/dev/null | awk '$2 == "Ready"' | wc -l; }
all_ready() { [[ $(ready_nodes) == "$1" ]]; }

# --- commands ---------------------------------------------------------------------------------

healthy() {
	local n=$1 k
	((n > 0)) || return 1
	for ((k = 1; k <= n; k++)); do
		alive "$STATE/n$k/dockerd.pid" dockerd || return 1
		alive "$STATE/n$k/socat.pid" socat || return 1
		engine_answers "$k" >/dev/null 2>&1 || return 1
	done
	alive "$STATE/socat-root.pid" socat || return 1
	all_ready "$n"
}

# abandoned: the recorded cluster has not one living process (no engine, no forwarder, nothing
# in a node's namespace): its owner's processes died with a machine or session restart while
# /run and the namespaces stayed. Such a cluster serves nobody; any checkout may clear it.
abandoned() {
	local name f
	alive "$STATE/socat-root.pid" socat && return 1
	for f in "$STATE"/n*/dockerd.pid "$STATE"/n*/socat.pid; do
		[[ -f $f ]] && alive "$f" "" && return 1
	done
	for name in $(ip netns list | awk '{print $1}'); do
		[[ $name =~ ^fpc-n([0-9]+)$ ]] || continue
		[[ -n $(node_pids "${BASH_REMATCH[1]}") ]] && return 1
	done
	true
}

# reclaim: take an abandoned cluster of another checkout down and make this checkout's state the
# cluster's (nothing of it runs, so only the namespaces, links and the owner record go).
reclaim() {
	[[ $STATE != "$OWN_STATE" ]] || return 0
	abandoned || return 1
	log "the cluster recorded by $STATE has no living process (left by a restart); clearing it"
	net_down
	rm -f "$OWNER_FILE"
	STATE=$OWN_STATE
}

check_owner() {
	reclaim || true
	if [[ $STATE != "$OWN_STATE" ]]; then
		die "another checkout's cluster is up ($STATE) but not as asked or not healthy: bring it down there (scripts/dev-env.sh cluster down)"
	fi
}

cmd_up() {
	local n=3 managers=1
	while (($#)); do
		case $1 in
		--managers)
			[[ ${2:-} == 1 || ${2:-} == 3 ]] || bad "--managers ${2:-} : give 1 or 3"
			managers=$2
			shift 2
			;;
		[0-9]*)
			[[ $1 =~ ^[1-9]$ ]] || bad "node count $1: give 1 to 9"
			n=$1
			shift
			;;
		*) bad "cluster up: unknown argument $1 (usage: cluster up [N] [--managers 1|3])" ;;
		esac
	done
	((managers <= n)) || bad "--managers $managers needs at least $managers nodes, not $n"
	need_tools
	if [[ $(nodes_count) == "$n" && $(managers_count) == "$managers" ]] && healthy "$n"; then
		log "the $n-node cluster is up already${STATE:+ ($STATE)}"
		echo "CLUSTER_NODES=$n"
		echo "CLUSTER_DOCKER_HOST=$(host_of 1)"
		return 0
	fi
	check_owner
	if [[ $(nodes_count) != 0 ]]; then
		log "a different or broken cluster is recorded ($(nodes_count) nodes); taking it down first"
		cmd_down
	fi
	registry_answers || die "no registry answers on $REGISTRY: run scripts/dev-env.sh up first"
	local t0=$SECONDS k
	mkdir -p "$STATE"
	echo "$STATE" >"$OWNER_FILE"
	echo "$n" >"$STATE/nodes"
	echo "$managers" >"$STATE/managers"
	log "starting $n engines in network namespaces fpc-n1..fpc-n$n ($NET.11-$NET.$((10 + n)))"
	net_up "$n"
	forward_root_up
	for ((k = 1; k <= n; k++)); do
		mkdir -p "$STATE/n$k"
		forward_node_up "$k"
		engine_start "$k"
	done
	for ((k = 1; k <= n; k++)); do engine_wait "$k"; done
	for ((k = 1; k <= n; k++)); do
		poll 10 node_registry_answers "$k" || die "node $k cannot reach the registry through its forwarder (log: $STATE/n$k/socat.log)"
	done
	swarm_form "$n" "$managers"
	poll 60 all_ready "$n" || die "only $(ready_nodes) of $n swarm nodes are Ready: $(dk 1 node ls 2>&1)"
	if [[ -n ${FRACTALIC_STAND_IN_IMAGE:-} ]]; then
		log "pulling $FRACTALIC_STAND_IN_IMAGE on every node"
		local pids=()
		for ((k = 1; k <= n; k++)); do
			DK_TIMEOUT=300 dk "$k" pull -q "$FRACTALIC_STAND_IN_IMAGE" >/dev/null &
			pids+=($!)
		done
		for k in "${pids[@]}"; do wait "$k" || die "a node could not pull $FRACTALIC_STAND_IN_IMAGE"; done
	fi
	log "the $n-node swarm is up in $((SECONDS - t0)) s ($managers manager(s)); manager: $(host_of 1)"
	echo "CLUSTER_NODES=$n"
	echo "CLUSTER_DOCKER_HOST=$(host_of 1)"
}

cmd_down() {
	local n k
	n=$(nodes_count)
	if [[ ! -d $STATE ]] || { ((n == 0)) && ! ip netns list | grep -q '^fpc-'; }; then
		log "no cluster was started from this checkout; nothing to stop"
		return 0
	fi
	reclaim || true
	if [[ $STATE != "$OWN_STATE" ]]; then
		die "the cluster up now belongs to $STATE; not touching it (bring it down from that checkout)"
	fi
	for d in "$STATE"/n*/; do
		[[ -d $d ]] || continue
		k=${d%/}
		k=${k##*/n}
		engine_kill "$k"
	done
	kill_pidfile "$STATE/socat-root.pid" socat
	net_down
	rm -rf "${STATE:?}"/n* "$STATE/nodes" "$STATE/managers" "$STATE/socat-root.log"
	rm -f "$OWNER_FILE"
	log "the cluster is down"
}

cmd_status() {
	local n k ok=0
	n=$(nodes_count)
	if ((n == 0)); then
		echo "cluster: not up (scripts/dev-env.sh cluster up)"
		return 1
	fi
	echo "cluster: $n node(s), $(managers_count) manager(s), state in $STATE"
	for ((k = 1; k <= n; k++)); do
		local e="down" r="cut"
		if alive "$STATE/n$k/dockerd.pid" dockerd && engine_answers "$k" >/dev/null 2>&1; then e="up (pid $(<"$STATE/n$k/dockerd.pid"))"; else ok=1; fi
		alive "$STATE/n$k/socat.pid" socat && r="reachable"
		echo "node $k: $(ns "$k") $(addr "$k") engine $e, registry $r, DOCKER_HOST=$(host_of "$k")"
	done
	dk 1 node ls 2>/dev/null || ok=1
	return $ok
}

node_arg() {
	[[ ${1:-} =~ ^[1-9]$ ]] && (($1 <= $(nodes_count))) || bad "node ${1:-} : give a node number from 1 to $(nodes_count)"
}

cmd_stop-node() {
	node_arg "${1:-}"
	KEEP_FORWARDER=1 engine_kill "$1"
	log "node $1's engine and containers are dead"
}

cmd_start-node() {
	node_arg "${1:-}"
	engine_start "$1"
	engine_wait "$1"
	log "node $1's engine is up"
}

cmd_cut-registry() {
	node_arg "${1:-}"
	local pid
	if alive "$STATE/n$1/socat.pid" socat; then
		pid=$(<"$STATE/n$1/socat.pid")
		# The forwarder and its per-connection children (they live in the node's namespace).
		for p in $(ip netns pids "$(ns "$1")"); do
			[[ $p == "$pid" || $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) == socat* ]] && kill -KILL "$p" 2>/dev/null
		done
	fi
	rm -f "$STATE/n$1/socat.pid"
	poll 5 bash -c "! ip netns exec $(ns "$1") timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000'" || die "node $1 still reaches the registry"
	log "node $1 can no longer reach the registry"
}

cmd_restore-registry() {
	node_arg "${1:-}"
	forward_node_up "$1"
	poll 10 node_registry_answers "$1" || die "node $1 cannot reach the registry"
	log "node $1 reaches the registry again"
}

cmd_host() {
	node_arg "${1:-}"
	host_of "$1"
}

main() {
	local cmd=${1:-}
	shift || true
	case $cmd in
	up | down | status | stop-node | start-node | cut-registry | restore-registry | host) ;;
	*)
		echo "usage: $0 cluster up [N] [--managers 1|3] | down | status | stop-node K | start-node K | cut-registry K | restore-registry K | host K" >&2
		exit 2
		;;
	esac
	mkdir -p "$STATE"
	exec 8>"$STATE/cluster.lock"
	flock -w 600 8 || die "another dev-env.sh cluster holds $STATE/cluster.lock"
	"cmd_$cmd" "$@"
}

main "$@"
