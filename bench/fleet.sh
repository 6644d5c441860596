#!/usr/bin/env bash
# A fleet simulated on this machine: one server network namespace (an rsync daemon and sshd,
# in a cgroup of their own so their CPU is measured) and NODES node namespaces, each with its
# own network namespace and veth to a bridge in the server's, its own host name (UTS
# namespace), state directory and disposable root (an overlay of /, in its own mount
# namespace). Every node dances at once (the worst case), then once more spread over a window
# as the timer would; each pushes its report back; then `disco fleet status` and `disco fleet
# diff` run on the server's reports, and a preview of a candidate tree runs on every node at
# once through clush and is read back by `disco fleet diff`.
#
#   bench/fleet.sh NODES [--check]
#
# With TRANSPORT=mixed (the default), even nodes reach the server's rsync daemon over TCP with a password of their own (rsyncd
# `auth users`); odd nodes reach it over ssh with a key of their own, forced to a daemon config
# of their own (`rsync --server --daemon --config=NODE.conf .`). Either way a node sees only
# `parameters/disco`, its own `parameters/NODE` and the modules, and may only write
# `reports/NODE/` (see doc/fleet.md). `--check` also proves that: each node tries to read
# another node's parameters and to write another node's reports, and must fail.
#
# TRANSPORT=rsyncd or TRANSPORT=ssh puts every node on one of the two.
# Environment: DISCO (the binary; default: a release build), MODULES and FILES (the site's
# modules, 50, and files per module, 40: the CI test runs a smaller site), WINDOW (seconds of the spread
# round; default 1.5 s per node, at least 10), TIMEOUT (seconds one dance may take; default 900).
# Only 10.213.0.0/16 inside the namespaces made here is used; the host's interfaces, routes and
# firewall are never touched. Everything made here (namespaces, veths, the bridge, the cgroup,
# processes, mounts, files) is removed on exit, failed or not.
#
# The last line (other tools read it):
# fleet: NODES nodes, E errors, server X ms CPU per node-dance, node p50 A s, p99 B s, holds H nodes at 30 min
# Disk: each node's 26 MB cache, and three reports per node on the server (at once, spread,
# preview), about 1 MB each: the copy a node pushes leaves the text diffs out. A fresh node's
# own report holds the contents of the files it would create (21 MB with the default site):
# only node 2's is kept. About 6 GB for 200 nodes. Memory: each noop dance at once keeps its
# scratch layers (20 MB) in memory.
# X is the server's CPU (rsyncd's and sshd's cgroup, every connection's process included) in
# the spread round (warm caches, as every dance after a node's first); H = 2 cores x 1800 s / X.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=${1:?usage: bench/fleet.sh NODES [--check]}
check=${2:-}
[[ $nodes =~ ^[0-9]+$ ]] && ((nodes >= 2 && nodes <= 1000)) || {
    echo "fleet.sh: NODES must be 2 to 1000" >&2
    exit 2
}
[ "$(id -u)" = 0 ] || {
    echo "fleet.sh: needs root (namespaces, mounts)" >&2
    exit 2
}
for tool in rsync ip unshare nsenter /usr/sbin/sshd ssh ssh-keygen clush python3 timeout; do
    command -v "$tool" >/dev/null || {
        echo "fleet.sh: $tool is missing: run tests/run --setup" >&2
        exit 2
    }
done
if [ -z "${DISCO:-}" ]; then
    cargo build --release -q
    DISCO=${CARGO_TARGET_DIR:-$PWD/target}/release/disco
fi
((${MODULES:-50} >= 5 && ${MODULES:-50} <= 99 && ${FILES:-40} <= 1000)) || {
    echo "fleet.sh: MODULES must be 5 to 99 (the preview changes mod05), FILES at most 1000" >&2
    exit 2
}
transport=${TRANSPORT:-mixed}
case $transport in mixed | rsyncd | ssh) ;; *) echo "fleet.sh: TRANSPORT is mixed, rsyncd or ssh" >&2; exit 2 ;; esac
# The spread round is spread as a timer spreads dances: far enough apart that they seldom
# overlap (a noop dance of the default site costs a node about 2.5 s of CPU; NODES nodes
# share this machine's cores).
window=${WINDOW:-$((nodes * 3 / 2 > 10 ? nodes * 3 / 2 : 10))}
timeout=${TIMEOUT:-900}
tag=dfl$$
work=$(mktemp -d /tmp/disco-fleet.XXXXXX)
echo "namespaces: $tag-*, cgroup: disco-fleet-$$"
# The server's cgroup, in the cgroup v2 hierarchy wherever it is mounted (a hybrid host has it
# at /sys/fs/cgroup/unified): its cpu.stat counts every process of it.
cgroot=$(findmnt -n -t cgroup2 -o TARGET | head -1)
[ -n "$cgroot" ] || {
    echo "fleet.sh: no cgroup v2 mounted: the server's CPU cannot be measured" >&2
    exit 2
}
cg=$cgroot/disco-fleet-$$
srv=$tag-srv
addr=10.213.0.1
pids=()

cleanup() {
    set +e
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # What is left in the server's cgroup (a connection's process) is ours alone.
    if [ -d "$cg" ]; then
        [ -e "$cg/cgroup.kill" ] && echo 1 >"$cg/cgroup.kill"
        for sub in rsyncd sshd; do
            for _ in $(seq 50); do [ -s "$cg/$sub/cgroup.procs" ] || break; sleep 0.1; done
            rmdir "$cg/$sub"
        done
        rmdir "$cg"
    fi
    # Deleting a node's namespace deletes its veth pair; the server's takes the bridge.
    for ns in $(ip netns list | awk -v t="$tag-" 'index($1, t) == 1 {print $1}'); do
        ip netns pids "$ns" | xargs -r kill -KILL
        ip netns del "$ns"
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node() { printf 'n%03d.fleet' "$1"; }
node_ip() { echo "10.213.$(($1 / 250 + 1)).$(($1 % 250 + 1))"; }

# --- The site: 50 modules, 40 files of about 10 kB each (2,000 files, 20 MB), one template
# and one script each; every node runs every module. Nodes 3 and 7 get another NTP server.
site=$work/srv/site
python3 bench/fleet-site.py "$site" "$nodes" "${MODULES:-50}" "${FILES:-40}"
# The candidate: one module's template changed, for the preview.
cp -a "$site" "$work/srv/candidate"
echo 'echo candidate=yes' >>"$work/srv/candidate/modules/mod05/templates/etc/fleet/mod05.conf"
mkdir -p "$work/srv/reports" "$work/srv/nodes"
chmod 700 "$work/srv/nodes"

# --- The server's rsync daemon config: per node, the site (and the candidate) filtered to
# that node's parameters, and the reports filtered to that node's folder, write only, as
# doc/fleet.md sets a server up (contrib/fleet/disco-rsyncd-node).
rsyncd_node=$PWD/contrib/fleet/disco-rsyncd-node
conf=$work/srv/rsyncd.conf
secrets=$work/srv/rsyncd.secrets
printf 'use chroot = no\nuid = root\ngid = root\nmax connections = 0\nlisten backlog = 1024\nlog file = /dev/null\nsecrets file = %s\n\n' \
    "$secrets" >"$conf"
: >"$secrets"
chmod 600 "$secrets"
keys=$work/srv/authorized_keys
: >"$keys"
ssh-keygen -q -t ed25519 -N '' -f "$work/srv/host_key"
for i in $(seq 1 "$nodes"); do
    n=$(node "$i")
    state=$work/nodes/$n/state
    mkdir -p "$state" "$work/nodes/$n/root" "$work/nodes/$n/scratch"
    chmod 700 "$state"
    if [ "$transport" = rsyncd ] || { [ "$transport" = mixed ] && ((i % 2 == 0)); }; then
        echo "$i" >>"$work/tcp-nodes"
        pass=$(head -c 18 /dev/urandom | base64)
        echo "$n:$pass" >>"$secrets"
        "$rsyncd_node" "$n" "$work/srv" tcp >>"$conf"
        (umask 077 && echo "$pass" >"$state/rsync.pass")
        cmd="rsync -aHAX --password-file=$state/rsync.pass"
        uri="rsync://$n@$addr/$n-site/"
        cand="rsync://$n@$addr/$n-candidate/"
        reports="rsync://$n@$addr/$n-reports"
    else
        printf 'use chroot = no\nuid = root\ngid = root\nlog file = /dev/null\n\n' >"$work/srv/nodes/$n.conf"
        "$rsyncd_node" "$n" "$work/srv" ssh >>"$work/srv/nodes/$n.conf"
        ssh-keygen -q -t ed25519 -N '' -C "$n" -f "$state/id_disco"
        echo "command=\"rsync --server --daemon --config=$work/srv/nodes/$n.conf .\",restrict $(cat "$state/id_disco.pub")" >>"$keys"
        # One ssh connection per dance: the report's push rides on the fetch's (ControlMaster).
        # doc/fleet.md keeps it 60 s after its last use; here a dance takes minutes (NODES
        # dances share this machine's cores), so it is kept longer and node.sh ends it.
        cmd="rsync -aHAX -e 'ssh -F /dev/null -i $state/id_disco -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ControlMaster=auto -o ControlPath=$state/ssh -o ControlPersist=${SSH_PERSIST:-900}'"
        uri="root@$addr::site"
        cand="root@$addr::candidate"
        reports="root@$addr::reports"
    fi
    for kv in "disco/server/uri=$uri" "disco/client/cmds/rsync=$cmd" "disco/client/reports=$reports"; do
        "$DISCO" --state-dir "$state" param set "${kv%%=*}" "${kv#*=}" >/dev/null
    done
    echo "$cand" >"$work/nodes/$n/candidate"
done
cat >"$work/srv/sshd_config" <<EOF
ListenAddress $addr
HostKey $work/srv/host_key
PidFile none
AuthorizedKeysFile $keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 1000
MaxSessions 10
LogLevel ERROR
EOF

# --- The network: the server's namespace holds the bridge; each node's veth peer is made there
# and moved into the node's namespace, so nothing is ever made in the host's.
ip netns add "$srv"
ip -n "$srv" link set lo up
ip -n "$srv" link add br0 type bridge
ip -n "$srv" addr add "$addr/16" dev br0
ip -n "$srv" link set br0 up
for i in $(seq 1 "$nodes"); do
    ns=$tag-$i
    ip netns add "$ns"
    ip -n "$srv" link add "v$i" type veth peer name eth0 netns "$ns"
    ip -n "$srv" link set "v$i" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(node_ip "$i")/16" dev eth0
    ip -n "$ns" link set eth0 up
done

# --- The server's daemons, each in a cgroup of its own (every connection's process with it).
mkdir "$cg" "$cg/rsyncd" "$cg/sshd"
start() { # NAME LOG CMD...: runs CMD in the server's namespace and in cgroup NAME
    local name=$1 log=$2
    shift 2
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg/$name" ip netns exec "$srv" "$@" >"$log" 2>&1 &
    pids+=($!)
}
start rsyncd "$work/srv/rsyncd.out" rsync --daemon --no-detach --address="$addr" --config="$conf"
# The account a forced command runs as starts its shell on every connection, and bash reads
# ~/.bashrc there: doc/fleet.md gives the fleet's account /bin/sh and no rc files. Here the
# account is root, so sshd sees root with /bin/sh (its own mount namespace, its own passwd).
sed 's#^\(root:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*\):.*#\1:/bin/sh#' /etc/passwd >"$work/srv/passwd"
start sshd "$work/srv/sshd.out" unshare --mount --propagation private \
    sh -c 'mount --bind "$0" /etc/passwd && exec "$@"' "$work/srv/passwd" \
    /usr/sbin/sshd -D -e -f "$work/srv/sshd_config"
for port in 873 22; do
    for _ in $(seq 100); do
        ip netns exec "$srv" bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null && break
        sleep 0.1
    done
done
server_cpu() { awk '$1 == "usage_usec" {print $2}' "$cg/${1:-.}/cpu.stat"; }
tcp_nodes=$( (cat "$work/tcp-nodes" 2>/dev/null || true) | wc -l)

# --- One node's dance, in its namespaces: its host name, a disposable root (an overlay of /
# whose upper layer is the node's own), its state directory. Prints "NODE SECONDS STATUS".
# In a file of its own, which clush's exec worker runs for each node as well.
cat >"$work/node.sh" <<'EOF_NODE'
# node.sh INDEX ROUND [dance args]: one dance of node INDEX, its JSON in nodes/NODE/ROUND.json
set -u
i=$1 round=$2
shift 2
n=$(printf 'n%03d.fleet' "$i")
d=$work/nodes/$n
t0=$(date +%s%N)
rc=0
timeout -k 10 "$timeout" ip netns exec "$tag-$i" unshare --uts --mount --propagation private \
    sh -c 'hostname "$1" && mkdir -p "$2/scratch/u" "$2/scratch/w" &&
           mount -t overlay overlay -o "lowerdir=/,upperdir=$2/scratch/u,workdir=$2/scratch/w" "$2/root" &&
           shift 2 && exec "$@"' \
    sh "$n" "$d" "$DISCO" --state-dir "$d/state" dance --root "$d/root" --no-wait --format json "$@" \
    >"$d/$round.json" 2>"$d/$round.err" || rc=$?
t1=$(date +%s%N)
# An ssh node's connection ends with its dance, as the timer's unit ends it (every process of
# the unit is stopped), so that no dance rides on an earlier one's connection.
[ -S "$d/state/ssh" ] && ssh -o ControlPath="$d/state/ssh" -O exit x 2>/dev/null
# A fresh node's own noop report holds its created files' contents (21 MB with the default
# site): keep only what the checks read (node 2's, a preview's until clush has it, a failed
# one's), and none of the state directory's copies, or 200 nodes fill the disk.
rm -rf "$d/state/reports"
if [ "$rc" = 0 ] && ! grep -q '"ok": *true' "$d/$round.json"; then rc=failed; fi
[ "$i" = 2 ] || [ "$round" = preview ] || [ "$rc" != 0 ] || rm -f "$d/$round.json"
echo "$n $(((t1 - t0) / 1000000)) $rc"
EOF_NODE
export work tag timeout DISCO
dance_one() { bash "$work/node.sh" "$@"; }

round() { # NAME SPREAD_SECONDS: every node dances once; prints the round's figures
    local name=$1 spread=$2 before after dances=() r0 r1
    before=$(server_cpu)
    r0=$(server_cpu rsyncd)
    for i in $(seq 1 "$nodes"); do
        if ((spread > 0)); then
            ms=$(((RANDOM * 32768 + RANDOM) % (spread * 1000)))
            (sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))" && dance_one "$i" "$name" --noop) &
        else
            dance_one "$i" "$name" --noop &
        fi
        dances+=($!)
    done >"$work/$name.times"
    wait "${dances[@]}"
    after=$(server_cpu)
    r1=$(server_cpu rsyncd)
    python3 - "$work/$name.times" "$name" "$before" "$after" "$nodes" "$r0" "$r1" "$tcp_nodes" <<'PY'
import sys
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
name, before, after, nodes, r0, r1, tcp = sys.argv[2], *map(int, sys.argv[3:])
route = []
if tcp:
    route.append(f"rsyncd {(r1 - r0) / 1000 / tcp:.1f} ms per TCP node")
if nodes > tcp:
    route.append(f"sshd {(after - before - r1 + r0) / 1000 / (nodes - tcp):.1f} ms per ssh node")
walls = sorted(int(l[1]) / 1000 for l in lines)
errors = sum(1 for l in lines if l[2] != "0") + nodes - len(lines)
pick = lambda q: walls[min(len(walls) - 1, int(q * len(walls)))]
cpu = (after - before) / 1000 / nodes
print(f"round {name}: {len(lines)} dances, {errors} errors, server {cpu:.1f} ms CPU per node-dance, "
      f"node p50 {pick(0.5):.2f} s, p99 {pick(0.99):.2f} s ({', '.join(route)})")
open(f"{sys.argv[1]}.sum", "w").write(f"{errors} {cpu} {pick(0.5)} {pick(0.99)}\n")
PY
}

start_all=$(date +%s)
round at-once 0
round spread "$window"
awk '$3 != "0" {print $1}' "$work/at-once.times" "$work/spread.times" | sort -u | head -20 |
    while read -r n; do
        why=$(python3 -c 'import json, sys
for f in sys.argv[1:]:
    try:
        doc = json.load(open(f))
    except (OSError, ValueError):
        continue
    print(*{m["name"] + ": " + str(m["reason"]) for m in doc["modules"] if m["status"] == "failed"}, sep="; ")' \
            "$work/nodes/$n/spread.json" "$work/nodes/$n/at-once.json" | head -c 400)
        echo "error: $n's dance: $why $(tail -q -n 3 "$work/nodes/$n/spread.err" "$work/nodes/$n/at-once.err" | tr '\n' ' ')"
    done

# --- On the server: every node's reports, then fleet status and fleet diff.
missing=0
for i in $(seq 1 "$nodes"); do
    n=$(node "$i")
    c=$(find "$work/srv/reports/$n" -name '*.json' 2>/dev/null | wc -l)
    ((c == 2)) || { echo "error: $n pushed $c reports, not 2"; missing=$((missing + 1)); }
done
echo "reports: $(find "$work/srv/reports" -name '*.json' | wc -l) on the server from $nodes nodes"
"$DISCO" fleet status --reports "$work/srv/reports" >"$work/status.out" && status_rc=0 || status_rc=$?
echo "fleet status: exit $status_rc, $(grep -c . "$work/status.out") lines"
head -3 "$work/status.out"
"$DISCO" fleet diff --reports "$work/srv/reports" >"$work/diff.out"
echo "fleet diff:"
grep -E '^/etc/fleet/mod01.conf |failed' "$work/diff.out" | head -5 || true

# --- A preview: the candidate tree, every node at once through clush (its exec worker enters
# each node's namespace), each node's JSON collected by clush and read by fleet diff.
if command -v clush >/dev/null; then
    cat >"$work/preview.sh" <<'EOF_PREVIEW'
# preview.sh INDEX: node INDEX's noop dance against the candidate, its JSON on stdout
n=$(printf 'n%03d.fleet' "$1")
bash "$work/node.sh" "$1" preview --noop --source "$(cat "$work/nodes/$n/candidate")" >/dev/null
cat "$work/nodes/$n/preview.json"
[ "$1" = 2 ] || rm -f "$work/nodes/$n/preview.json"
EOF_PREVIEW
    clush -R exec -f "$nodes" -w "[1-$nodes]" --outdir "$work/preview.out" --errdir "$work/preview.err" \
        bash "$work/preview.sh" %h >/dev/null 2>&1 || true
    for i in $(seq 1 "$nodes"); do
        mkdir -p "$work/preview/$(node "$i")"
        mv "$work/preview.out/$i" "$work/preview/$(node "$i")/preview.json" 2>/dev/null || true
    done
    "$DISCO" fleet diff --reports "$work/preview" >"$work/preview.diff" || true
    echo "preview (clush, candidate):"
    grep -E '^/etc/fleet/mod05.conf ' "$work/preview.diff" "$work/diff.out" | sed 's/^[^:]*://'
    # The candidate's mod05.conf is not the current one: the preview shows another md5.
    if [ "$(grep '^/etc/fleet/mod05.conf ' "$work/preview.diff")" = "$(grep '^/etc/fleet/mod05.conf ' "$work/diff.out")" ]; then
        echo "error: the preview shows the current mod05.conf, not the candidate's"
        missing=$((missing + 1))
    fi
fi

checks=0
if [ "$check" = --check ]; then
    fail() { echo "check failed: $*"; checks=$((checks + 1)); }
    # A candidate named by the client parameter makes the scheduled dance a noop against it.
    "$DISCO" --state-dir "$work/nodes/$(node 2)/state" param set disco/client/candidate "$(cat "$work/nodes/$(node 2)/candidate")" >/dev/null
    dance_one 2 scheduled >/dev/null
    "$DISCO" --state-dir "$work/nodes/$(node 2)/state" param delete disco/client/candidate >/dev/null
    python3 - "$work/nodes/$(node 2)" <<'PY' && echo "check: a scheduled dance with disco/client/candidate is a noop against the candidate" || fail "candidate parameter"
import json, sys
def after(name):
    doc = json.load(open(f"{sys.argv[1]}/{name}.json"))
    sides = [c["after"] for m in doc["modules"] for c in m["paths"] if c["path"] == "/etc/fleet/mod05.conf"]
    return doc["noop"], sides
noop, scheduled = after("scheduled")
assert noop is True
assert scheduled and scheduled == after("preview")[1], scheduled
assert scheduled != after("spread")[1], scheduled
PY
    # Each node, with its own credentials, tries another node's parameters and reports.
    try() { # INDEX CMD...: runs rsync in node INDEX's namespace; succeeds when rsync did
        local i=$1
        shift
        timeout 60 ip netns exec "$tag-$i" "$@" >"$work/try.out" 2>&1
    }
    bad=$(mktemp -d "$work/bad.XXXX")
    echo '{}' >"$bad/x.json"
    for i in 2 3; do
        n=$(node "$i")
        o=$(node $((i + 2)))
        state=$work/nodes/$n/state
        if grep -qx "$i" "$work/tcp-nodes" 2>/dev/null; then
            r=(rsync --password-file="$state/rsync.pass")
            own="rsync://$n@$addr/$n-site"
            other_mod="rsync://$n@$addr/$o-site/"
            rep="rsync://$n@$addr/$n-reports"
        else
            r=(rsync -e "ssh -F /dev/null -i $state/id_disco -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR")
            own="root@$addr::site"
            other_mod="root@$addr::$o-site/"
            rep="root@$addr::reports"
        fi
        try "$i" "${r[@]}" -r "$own/parameters/$n/" "$bad/own/" && [ -f "$bad/own/ntp_server" ] &&
            echo "check: $n reads its own parameters" || fail "$n cannot read its own parameters"
        if try "$i" "${r[@]}" -r "$own/parameters/$o/" "$bad/other/" && [ -n "$(ls -A "$bad/other" 2>/dev/null)" ]; then
            fail "$n read $o's parameters"
        else
            echo "check: $n cannot read $o's parameters"
        fi
        try "$i" "${r[@]}" -r "$other_mod" "$bad/othermod/" && fail "$n read $o's rsync module" ||
            echo "check: $n cannot open $o's rsync module"
        try "$i" "${r[@]}" -r "$own/reports/" "$bad/rep/" && [ -n "$(ls -A "$bad/rep" 2>/dev/null)" ] &&
            fail "$n listed the reports" || echo "check: $n cannot read reports"
        try "$i" "${r[@]}" --mkpath "$bad/x.json" "$rep/$o/x.json" || true
        [ -e "$work/srv/reports/$o/x.json" ] && fail "$n wrote $o's reports" ||
            echo "check: $n cannot write $o's reports"
        try "$i" "${r[@]}" -r "$rep/$n/" "$bad/rd/" && [ -n "$(ls -A "$bad/rd" 2>/dev/null)" ] &&
            fail "$n read back its reports (write only)" || echo "check: $n cannot read its reports back"
    done
    # The prepared difference: nodes 3 and 7 have another NTP server.
    line=$(grep '^/etc/fleet/mod01.conf : ' "$work/diff.out" || true)
    odd=$(node 3)
    ((nodes >= 7)) && odd="$odd, $(node 7)"
    want="on $((nodes >= 7 ? 2 : 1)) node"
    [[ $line == *"on $((nodes >= 7 ? nodes - 2 : nodes - 1)) nodes (md5 - => "* && $line == *"$want"*"otherwise: $odd" ]] &&
        echo "check: fleet diff names the two odd nodes" || fail "fleet diff: $line"
    [ "$status_rc" = 0 ] && [ "$(grep -c . "$work/status.out")" -ge "$nodes" ] &&
        echo "check: fleet status lists every node, all fresh and ok" || fail "fleet status exit $status_rc"
fi

read -r e1 _ _ _ <"$work/at-once.times.sum"
read -r e2 cpu p50 p99 <"$work/spread.times.sum"
errors=$((e1 + e2 + missing + checks))
echo "took $(($(date +%s) - start_all)) s"
python3 - "$nodes" "$errors" "$cpu" "$p50" "$p99" <<'PY'
import sys
nodes, errors, cpu, p50, p99 = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:])
holds = int(2 * 1800 * 1000 / cpu) if cpu > 0 else 0
print(f"fleet: {nodes} nodes, {errors} errors, server {cpu:.1f} ms CPU per node-dance, "
      f"node p50 {p50:.2f} s, p99 {p99:.2f} s, holds {holds} nodes at 30 min")
PY
((errors == 0))
