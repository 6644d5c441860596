#!/bin/bash
# Benchmark of `disco fix` (a benchmark, not a test): the host's overhead per fix against running
# the same module directly with the same stdin, in the same hyperfine run; what the cgroup per
# fix adds, against the same host without one (goal: at most 0.5 ms), the three interleaved;
# then 1,000 fixes in a row, to show the time per fix stays flat (no growth).
#
# Usage: bench/fix.sh [DISCO_BINARY]   (default: builds and uses target/release/disco)
# Needs hyperfine (apt-get install -y hyperfine).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
disco=${1:-}
if [ -z "$disco" ]; then
    (cd "$here" && cargo build --release -p disco >/dev/null)
    disco=$here/target/release/disco
fi
module=$here/tests/fixtures/modules/ok
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$disco" request --timeout 45 > "$work/req.xml"

echo "== disco fix --lock none vs the module run directly (hyperfine, same run)"
hyperfine -N --warmup 50 --runs 500 --export-json "$work/h.json" \
    -n direct "bash -c '$module < $work/req.xml'" \
    -n disco "$disco fix $module --lock none --host bench --service bench --format json"
python3 - "$work/h.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
d, h = r["direct"]["median"] * 1e3, r["disco"]["median"] * 1e3
print(f"median direct {d:.3f} ms, disco fix {h:.3f} ms: host adds {h - d:.3f} ms ({h / d:.2f}x)")
PY

echo "== the cgroup per fix: disco fix with and without it, interleaved (same run)"
# Without: DISCO_CGROUP_ROOT names no cgroup, so disco falls back to /proc tracking (and warns).
# The three commands take turns, so a neighbour's load drifting over time weighs on all alike.
python3 - "$disco" "$module" "$work/req.xml" <<'PY'
import os, statistics, sys, time
disco, module, req = sys.argv[1:4]
fix = [disco, "fix", module, "--lock", "none", "--host", "bench", "--service", "bench",
       "--format", "json"]
env = dict(os.environ)
variants = {
    "direct": (["/bin/bash", "-c", f"{module} < {req}"], env),
    "tracking": (fix, {**env, "DISCO_CGROUP_ROOT": "/nonexistent"}),
    "cgroup": (fix, env),
}
null = os.open(os.devnull, os.O_RDWR)
acts = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)]
times = {k: [] for k in variants}
for i in range(550):
    for name, (argv, e) in variants.items():
        t = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, e, file_actions=acts)
        os.waitpid(pid, 0)
        if i >= 50:  # warm-up
            times[name].append((time.perf_counter() - t) * 1e3)
d, t, c = (statistics.median(times[k]) for k in ("direct", "tracking", "cgroup"))
print(f"median of 500: direct {d:.3f} ms, tracking only {t:.3f} ms, cgroup {c:.3f} ms: "
      f"the cgroup adds {c - t:+.3f} ms (goal <= 0.5 ms); the host in all {c - d:+.3f} ms")
PY

echo "== 1,000 fixes in a row (standard lock in a temp lock dir)"
python3 - "$disco" "$module" "$work" <<'PY'
import subprocess, sys, time, statistics
disco, module, work = sys.argv[1:4]
cmd = [disco, "fix", module, "--host", "bench", "--service", "bench",
       "--lock-dir", f"{work}/locks", "--format", "json"]
times = []
for _ in range(1000):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    times.append((time.perf_counter() - t) * 1e3)
first, last = statistics.median(times[:100]), statistics.median(times[-100:])
print(f"median of fixes 1-100: {first:.3f} ms; of fixes 901-1000: {last:.3f} ms; "
      f"change {last - first:+.3f} ms")
PY
