#!/usr/bin/env bash
# A fleet simulated on this machine: one server network namespace (rsync daemons, haproxy and
# sshd, each way in a cgroup of its own so its CPU is measured) and NODES node namespaces, each with its
# own network namespace and veth to a bridge in the server's, its own host name (UTS
# namespace), state directory and disposable root (an overlay of /, in its own mount
# namespace). Every node dances at once (the worst case), then once more spread over a window
# as the timer would; each pushes its report back; then `disco fleet status` and `disco fleet
# diff` run on the server's reports, and a preview of a candidate tree runs on every node at
# once through clush and is read back by `disco fleet diff`.
#
#   bench/fleet.sh NODES [--check]
#
# Nodes come in one of three ways (doc/fleet.md), TRANSPORT picks which:
# - tls (the default, the way doc/fleet.md recommends for a fleet): the shipped haproxy.cfg
#   ends TLS in front of an rsync daemon on the server's loopback, which reads the shipped
#   rsyncd.conf; each node authenticates as itself with a password of its own, through rsync-ssl,
#   and refuses a server whose certificate the fleet's CA did not sign;
# - rsyncd: the same daemon over plain TCP (a network you trust);
# - ssh: a key and a certificate of the node's own, whose force-command names a daemon config of
#   its own (`rsync --server --daemon --config=NODE.conf .`);
# - mixed: a third of the nodes each way (node 2, 5... rsyncd; 3, 6... ssh; 1, 4... tls), each
#   way's server CPU measured apart.
# Either way a node sees only `parameters/disco`, its own `parameters/NODE` and the modules, and
# may only write `reports/NODE/`. `--check` also proves that: nodes 2, 3 and 4 each try to read
# another node's parameters, to authenticate as another node or run another command, and to
# write another node's reports, and must fail; a TLS node must refuse a server with a
# certificate of another CA.
#
# Environment: DISCO (the binary; default: a release build), MODULES and FILES (the site's
# modules, 50, and files per module, 40: the CI test runs a smaller site), WINDOW (seconds of
# the spread round; default 1.5 s per node, at least 10), TIMEOUT (seconds one dance may take;
# default 900), PAD (the fleet the server's secrets file is sized for; default 50,000).
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
# X is the server's CPU (the daemons' cgroups, every connection's process included) in
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
for tool in rsync rsync-ssl haproxy openssl ip unshare nsenter /usr/sbin/sshd ssh ssh-keygen clush python3 timeout; do
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
transport=${TRANSPORT:-tls}
case $transport in tls | rsyncd | ssh | mixed) ;; *) echo "fleet.sh: TRANSPORT is tls, rsyncd, ssh or mixed" >&2; exit 2 ;; esac
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
        for sub in rsyncd tls sshd; do
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

# --- The server, as doc/fleet.md sets one up. The TCP way: the shipped rsyncd.conf (one config
# for every node: the site and the candidate filtered to the authenticated node's parameters,
# the reports to its folder, write only), with this server's paths and account. The ssh way: a
# certificate per node whose force-command names a daemon config of the node's own
# (contrib/fleet/disco-rsyncd-node). Nothing the server reads per connection grows with the
# fleet but the secrets file, which is padded to PAD nodes (default 50,000: the goal's fleet)
# with this fleet's nodes last, so that each connection costs what it would there.
rsyncd_node=$PWD/contrib/fleet/disco-rsyncd-node
conf=$work/srv/rsyncd.conf
secrets=$work/srv/rsyncd.secrets
sed -e "s#/srv/disco#$work/srv#g" -e 's#^uid = .*#uid = root#' -e 's#^gid = .*#gid = root#' \
    -e "s#^secrets file = .*#secrets file = $secrets#" contrib/fleet/rsyncd.conf >"$conf"
(umask 077 && python3 -c 'import secrets, sys
sys.stdout.writelines(f"pad{i:06d}.fleet:{secrets.token_urlsafe(18)}\n" for i in range(int(sys.argv[1])))' \
    "$((${PAD:-50000} > nodes ? ${PAD:-50000} - nodes : 0))" >"$secrets")
ssh-keygen -q -t ed25519 -N '' -f "$work/srv/host_key"
ssh-keygen -q -t ed25519 -N '' -C "disco fleet CA" -f "$work/srv/ca"
# The TLS way: the fleet's CA and the server's certificate for its address (doc/fleet.md); for
# --check, a rogue server's, signed by another CA, and one the fleet's CA signed for another
# name, both of which a node must refuse.
tls_ca() { # NAME: $tls/NAME-ca.pem and its key
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$1 CA" -keyout "$tls/$1-ca.key" -out "$tls/$1-ca.pem" 2>/dev/null
}
tls_cert() { # NAME CA HOST: $tls/NAME.pem (the certificate, then its key) for HOST, signed by CA
    # The server's address is its name here: rsync-ssl checks the host it connects to.
    printf 'subjectAltName=DNS:%s\n' "$3" >"$tls/$1.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
        -keyout "$tls/$1.key" -out "$tls/$1.csr" 2>/dev/null
    openssl x509 -req -days 2 -in "$tls/$1.csr" -CA "$tls/$2-ca.pem" -CAkey "$tls/$2-ca.key" \
        -CAcreateserial -extfile "$tls/$1.ext" -out "$tls/$1.crt" 2>/dev/null
    cat "$tls/$1.crt" "$tls/$1.key" >"$tls/$1.pem"
}
tls=$work/srv/tls
mkdir -m 700 "$tls"
tls_ca fleet
tls_ca rogue
tls_cert server fleet "$addr"
tls_cert rogue rogue "$addr"
tls_cert misnamed fleet other.fleet
for i in $(seq 1 "$nodes"); do
    n=$(node "$i")
    state=$work/nodes/$n/state
    mkdir -p "$state" "$work/nodes/$n/root" "$work/nodes/$n/scratch"
    chmod 700 "$state"
    way=$transport
    [ "$way" = mixed ] && way=$(case $((i % 3)) in 2) echo rsyncd ;; 0) echo ssh ;; 1) echo tls ;; esac)
    echo "$i" >>"$work/$way-nodes"
    if [ "$way" != ssh ]; then
        pass=$(head -c 18 /dev/urandom | base64)
        echo "$n:$pass" >>"$secrets"
        (umask 077 && echo "$pass" >"$state/rsync.pass")
        cmd="rsync -aHAX --password-file=$state/rsync.pass"
        # rsync-ssl's own port, 874; it checks the server's certificate against the fleet's CA
        # and the name it connects to.
        [ "$way" = tls ] && cmd="env RSYNC_SSL_TYPE=openssl RSYNC_SSL_CA_CERT=$tls/fleet-ca.pem rsync-ssl -aHAX --password-file=$state/rsync.pass"
        uri="rsync://$n@$addr/site/"
        cand="rsync://$n@$addr/candidate/"
        reports="rsync://$n@$addr/reports"
    else
        # The account here is root, so its daemon keeps root's uid (doc/fleet.md's is disco).
        { printf 'uid = root\ngid = root\n' && "$rsyncd_node" "$n" "$work/srv"; } >"$work/srv/nodes/$n.conf"
        ssh-keygen -q -t ed25519 -N '' -C "$n" -f "$state/id_disco"
        ssh-keygen -q -s "$work/srv/ca" -I "$n" -n root -O clear \
            -O force-command="rsync --server --daemon --config=$work/srv/nodes/$n.conf ." "$state/id_disco.pub"
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
AuthorizedKeysFile none
TrustedUserCAKeys $work/srv/ca.pub
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

# --- The server's daemons, each way in a cgroup of its own (every connection's process with it):
# rsyncd (plain TCP), tls (haproxy and the daemon behind it on the server's loopback, as
# doc/fleet.md sets them up) and sshd.
mkdir "$cg" "$cg/rsyncd" "$cg/tls" "$cg/sshd"
start() { # NAME LOG CMD...: runs CMD in the server's namespace and in cgroup NAME
    local name=$1 log=$2
    shift 2
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg/$name" ip netns exec "$srv" "$@" >"$log" 2>&1 &
    pids+=($!)
}
start rsyncd "$work/srv/rsyncd.out" rsync --daemon --no-detach --address="$addr" --config="$conf"
# The shipped haproxy.cfg with this server's address and certificate; and for --check two
# listeners a TLS node must refuse: port 875 with the rogue's certificate, port 876 with the
# misnamed one.
sed -e "s#bind :874 ssl crt .*#bind $addr:874 ssl crt $tls/server.pem#" contrib/fleet/haproxy.cfg >"$work/srv/haproxy.cfg"
for l in rogue:875 misnamed:876; do
    printf '\nfrontend %s\n    bind %s:%s ssl crt %s\n    default_backend disco_rsyncd\n' \
        "${l%:*}" "$addr" "${l#*:}" "$tls/${l%:*}.pem" >>"$work/srv/haproxy.cfg"
done
start tls "$work/srv/haproxy.out" haproxy -db -f "$work/srv/haproxy.cfg"
start tls "$work/srv/rsyncd-tls.out" rsync --daemon --no-detach --address=127.0.0.1 --config="$conf"
# The account a forced command runs as starts its shell on every connection, and bash reads
# ~/.bashrc there: doc/fleet.md gives the fleet's account /bin/sh and no rc files. Here the
# account is root, so sshd sees root with /bin/sh (its own mount namespace, its own passwd).
sed 's#^\(root:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*\):.*#\1:/bin/sh#' /etc/passwd >"$work/srv/passwd"
start sshd "$work/srv/sshd.out" unshare --mount --propagation private \
    sh -c 'mount --bind "$0" /etc/passwd && exec "$@"' "$work/srv/passwd" \
    /usr/sbin/sshd -D -e -f "$work/srv/sshd_config"
for where in "$addr/873" "$addr/874" "127.0.0.1/873" "$addr/22"; do
    for try in $(seq 100); do
        ip netns exec "$srv" bash -c "exec 3<>/dev/tcp/$where" 2>/dev/null && break
        ((try < 100)) || {
            echo "fleet.sh: nothing listens on $where: $(tail -q -n 2 "$work"/srv/*.out | tr '\n' ' ')" >&2
            exit 1
        }
        sleep 0.1
    done
done
server_cpu() { awk '$1 == "usage_usec" {print $2}' "$cg/${1:-.}/cpu.stat"; }
count() { (cat "$work/$1-nodes" 2>/dev/null || true) | wc -l; }
ways="rsyncd:$(count rsyncd) tls:$(count tls) sshd:$(count ssh)"

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
    local name=$1 spread=$2 before after dances=() per0 per1
    before=$(server_cpu)
    per0="$(server_cpu rsyncd) $(server_cpu tls) $(server_cpu sshd)"
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
    per1="$(server_cpu rsyncd) $(server_cpu tls) $(server_cpu sshd)"
    python3 - "$work/$name.times" "$name" "$before" "$after" "$nodes" "$per0" "$per1" "$ways" <<'PY'
import sys
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
name, before, after, nodes = sys.argv[2], *map(int, sys.argv[3:6])
per = [(b - a) / 1000 for a, b in zip(map(int, sys.argv[6].split()), map(int, sys.argv[7].split()))]
# Each way's cgroup over the nodes that came that way.
route = [f"{way} {ms / int(n):.1f} ms per node" for (way, n), ms in
         zip((w.split(":") for w in sys.argv[8].split()), per) if int(n)]
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
    # Nodes 2, 3 and 4: one of each way in a mixed fleet. Each tries node INDEX+2's.
    for i in 2 3 4; do
        ((i + 2 <= nodes)) || continue
        n=$(node "$i")
        o=$(node $((i + 2)))
        state=$work/nodes/$n/state
        bad=$(mktemp -d "$work/bad.XXXX")
        echo '{}' >"$bad/x.json"
        sshopts=(-F /dev/null -i "$state/id_disco" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
        if grep -qx "$i" "$work/ssh-nodes" 2>/dev/null; then
            r=(rsync -e "ssh ${sshopts[*]}")
            own="root@$addr::site"
            rep="root@$addr::reports"
            # Any other command: the certificate forces the node's own daemon config.
            try "$i" ssh -n "${sshopts[@]}" "root@$addr" "cat $work/srv/nodes/$o.conf" || true
            grep -q "parameters/$o/" "$work/try.out" && fail "$n ran a command of its own" ||
                echo "check: $n runs only its certificate's command"
        else
            r=(rsync --password-file="$state/rsync.pass")
            if grep -qx "$i" "$work/tls-nodes" 2>/dev/null; then
                ssl=(rsync-ssl --password-file="$state/rsync.pass")
                r=(env RSYNC_SSL_TYPE=openssl RSYNC_SSL_CA_CERT="$tls/fleet-ca.pem" "${ssl[@]}")
                mine="rsync://$n@$addr/site/parameters/$n/"
                # A server on the path with a certificate another CA signed (port 875): the node
                # must stop at the certificate, before it says its name. The same listener with
                # that CA trusted works, so the refusal is the CA's.
                if try "$i" env RSYNC_SSL_PORT=875 "${r[@]}" -r "$mine" "$bad/rogue/" || [ -e "$bad/rogue" ] ||
                    ! grep -q "certificate verify failed" "$work/try.out"; then
                    fail "$n trusted a rogue server: $(head -c 300 "$work/try.out")"
                elif ! try "$i" env RSYNC_SSL_PORT=875 RSYNC_SSL_TYPE=openssl RSYNC_SSL_CA_CERT="$tls/rogue-ca.pem" \
                    "${ssl[@]}" -r "$mine" "$bad/rogue/"; then
                    fail "the rogue listener does not work: $(head -c 300 "$work/try.out")"
                else
                    echo "check: $n refuses a server its fleet's CA did not sign"
                fi
                # A certificate of the fleet's CA for another name (port 876): refused too; the
                # same without the name check works.
                if try "$i" env RSYNC_SSL_PORT=876 "${r[@]}" -r "$mine" "$bad/misnamed/" || [ -e "$bad/misnamed" ] ||
                    ! grep -q "certificate verify failed" "$work/try.out"; then
                    fail "$n trusted a certificate for another name: $(head -c 300 "$work/try.out")"
                elif ! try "$i" env RSYNC_SSL_PORT=876 RSYNC_SSL_SKIP_HOSTNAME_CHECK=1 "${r[@]}" -r "$mine" "$bad/misnamed/"; then
                    fail "the misnamed listener does not work: $(head -c 300 "$work/try.out")"
                else
                    echo "check: $n refuses a certificate for another name"
                fi
            fi
            own="rsync://$n@$addr/site"
            rep="rsync://$n@$addr/reports"
            # Another node's name with this node's password: refused at authentication.
            if try "$i" "${r[@]}" -r "rsync://$o@$addr/site/parameters/$o/" "$bad/othermod/" ||
                ! grep -q "auth failed" "$work/try.out"; then
                fail "$n authenticated as $o: $(head -c 300 "$work/try.out")"
            else
                echo "check: $n cannot authenticate as $o"
            fi
        fi
        try "$i" "${r[@]}" -r "$own/parameters/$n/" "$bad/own/" && [ -f "$bad/own/ntp_server" ] &&
            echo "check: $n reads its own parameters" || fail "$n cannot read its own parameters"
        if try "$i" "${r[@]}" -r "$own/parameters/$o/" "$bad/other/" && [ -n "$(ls -A "$bad/other" 2>/dev/null)" ]; then
            fail "$n read $o's parameters"
        else
            echo "check: $n cannot read $o's parameters"
        fi
        try "$i" "${r[@]}" -r "$own/reports/" "$bad/rep/" && [ -n "$(ls -A "$bad/rep" 2>/dev/null)" ] &&
            fail "$n listed the reports" || echo "check: $n cannot read reports"
        # Another node's folder is refused where the node's own, with the same command, is not.
        try "$i" "${r[@]}" --mkpath "$bad/x.json" "$rep/$o/x.json" || true
        if [ -e "$work/srv/reports/$o/x.json" ]; then
            fail "$n wrote $o's reports"
        elif ! try "$i" "${r[@]}" --mkpath "$bad/x.json" "$rep/$n/x.json" || [ ! -e "$work/srv/reports/$n/x.json" ]; then
            fail "$n cannot write its own reports: $(head -c 300 "$work/try.out")"
        else
            echo "check: $n cannot write $o's reports"
        fi
        rm -f "$work/srv/reports/$n/x.json"
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
