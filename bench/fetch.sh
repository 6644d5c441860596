#!/usr/bin/env bash
# A dance's fetch from an rsync daemon on loopback against one bare `rsync -a` of the same
# files, in one run: the fleet's realistic site (50 modules, 2,000 files, 20 MB;
# bench/fleet-site.py) served as one rsync module, fetched by `disco dance --noop` of one node
# (the report's fetch steps: its parameters and modules, one session when the cache is warm)
# and by `rsync -a` of the node's parameters and every module into a warm copy (and, to show
# what the options cost, `rsync -aHAX`, the dance's default). Goal: the dance's fetch within
# 1.3x the bare rsync (steady state: nothing changed on the server).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "fetch.sh: needs root (the dance's sandbox)" >&2; exit 2; }
if [ -z "${DISCO:-}" ]; then
    cargo build --release -q
    DISCO=${CARGO_TARGET_DIR:-$PWD/target}/release/disco
fi
runs=${RUNS:-15}
work=$(mktemp -d /tmp/disco-fetch.XXXXXX)
daemon=
cleanup() {
    if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; fi
    rm -rf "$work"
}
trap cleanup EXIT

site=$work/site
python3 bench/fleet-site.py "$site" 1 50 40
port=$((20000 + $$ % 20000))
cat >"$work/rsyncd.conf" <<EOF
use chroot = no
uid = root
gid = root
log file = /dev/null
[site]
path = $site
read only = yes
EOF
rsync --daemon --no-detach --address=127.0.0.1 --port=$port --config="$work/rsyncd.conf" &
daemon=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
uri=rsync://127.0.0.1:$port/site/
paths=("$uri./parameters/disco" "$uri./parameters/n001.fleet")
for m in $(seq -w 1 50); do paths+=("$uri./modules/mod$m"); done

# Warm both copies once (the first fetch of a node sends everything; the schedule's do not).
"$DISCO" --state-dir "$work/state" dance --noop --source "$uri" --node n001.fleet >/dev/null 2>&1
rsync -aR --delete "${paths[@]}" "$work/bare/"
rsync -aHAXR --delete "${paths[@]}" "$work/bare-hax/"
hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/bare.json" \
    -n 'bare rsync -aR of the same paths' "rsync -aR --delete ${paths[*]} $work/bare/" \
    -n 'rsync -aHAXR (the dance default options)' "rsync -aHAXR --delete ${paths[*]} $work/bare-hax/" >/dev/null
fetches=()
for _ in $(seq "$runs"); do
    "$DISCO" --state-dir "$work/state" dance --noop --format json --source "$uri" --node n001.fleet >"$work/dance.json"
    fetches+=("$(python3 -c '
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["ok"], "the dance failed"
print(sum(s["duration_ms"] for s in doc["steps"] if s["step"] in ("fetch_params", "fetch")))
' "$work/dance.json")")
done
python3 - "$work/bare.json" "${fetches[@]}" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
bare, hax = (r["median"] * 1000 for r in results)
fetch = statistics.median(float(x) for x in sys.argv[2:])
print(f"fetch: bare rsync -aR {bare:.1f} ms (floor), rsync -aHAXR {hax:.1f} ms, the dance's fetch "
      f"{fetch:.1f} ms (median of {len(sys.argv) - 2}, rsync -aHAX) -> {fetch / bare:.2f}x the floor "
      f"(goal <= 1.3x), {fetch / hax:.2f}x the same options")
PY
