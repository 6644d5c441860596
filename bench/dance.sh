#!/usr/bin/env bash
# The seed's example as a noop dance from the local source, and a generated site of 100
# modules (each one template, two scripts, ten files), against the floor of running the same
# templates and scripts directly with bash, in one hyperfine run (root only: the sandbox).
# Each dance runs twice: with noop's own network namespace (the default) and, to measure what
# the namespace costs, with the host's (`--network host`, hidden from --help).
# BASELINE=/path/to/an/older/disco adds that binary's two noop dances to the same run, so a
# change is measured against its floor and its predecessor under the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
disco=${CARGO_TARGET_DIR:-$PWD/target}/release/disco
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

site=$work/site100
for i in $(seq -w 1 100); do
    m=$site/modules/mod$i
    mkdir -p "$m/scripts" "$m/templates/etc/disco-bench" "$m/files/etc/disco-bench/mod$i"
    mkdir -p "$site/parameters/bench.node/modules"
    : > "$site/parameters/bench.node/modules/mod$i"
    printf 'echo module=mod%s\necho sum=$((10#%s + 1))\n' "$i" "$i" > "$m/templates/etc/disco-bench/mod$i.conf"
    printf '#!/bin/bash\necho hello from mod%s\n' "$i" > "$m/scripts/00-hello.sh"
    printf '#!/bin/bash\ntest -d /etc\n' > "$m/scripts/10-check.sh"
    chmod 755 "$m/scripts/"*.sh
    for f in $(seq 1 10); do echo "file $f of mod$i" > "$m/files/etc/disco-bench/mod$i/f$f"; done
done
# The floor: the same templates and scripts, run directly with bash.
cat > "$work/floor.sh" <<FLOOR
for m in $site/modules/*; do
    bash "\$m"/templates/etc/disco-bench/*.conf > /dev/null
    for s in "\$m"/scripts/*; do bash "\$s" > /dev/null; done
done
FLOOR

baseline=()
if [ -n "${BASELINE:-}" ]; then
    baseline=(-n 'example: baseline dance --noop' "$BASELINE --state-dir $work/state-base dance --noop --source contrib/example-site --node localhost.localdomain"
              -n '100 modules: baseline dance --noop' "$BASELINE --state-dir $work/state-base dance --noop --source $site --node bench.node")
fi
hyperfine -N --warmup 2 --runs "${RUNS:-10}" --export-json "$work/dance.json" \
    -n 'example: disco dance --noop' "$disco --state-dir $work/state dance --noop --source contrib/example-site --node localhost.localdomain" \
    -n 'example: disco dance --noop --network host' "$disco --state-dir $work/state dance --noop --network host --source contrib/example-site --node localhost.localdomain" \
    -n '100 modules: bash floor' "bash $work/floor.sh" \
    -n '100 modules: disco dance --noop' "$disco --state-dir $work/state dance --noop --source $site --node bench.node" \
    -n '100 modules: disco dance --noop --network host' "$disco --state-dir $work/state dance --noop --network host --source $site --node bench.node" \
    "${baseline[@]}"
python3 - "$work/dance.json" <<'PY'
import json, sys
res = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
r = {k: v["median"] for k, v in res.items()}
lo = {k: min(v["times"]) for k, v in res.items()}
ex, floor, big = r['example: disco dance --noop'], r['100 modules: bash floor'], r['100 modules: disco dance --noop']
ex_host, big_host = r['example: disco dance --noop --network host'], r['100 modules: disco dance --noop --network host']
# The minimum is what a run costs when nothing else wants the CPUs: on a busy machine the
# medians move by more than the namespace costs.
ex_min, ex_host_min = lo['example: disco dance --noop'], lo['example: disco dance --noop --network host']
print(f"median: example dance {ex*1e3:.1f} ms (host network {ex_host*1e3:.1f} ms: the namespace "
      f"costs {(ex-ex_host)*1e3:+.1f} ms; minimum {ex_min*1e3:.1f} vs {ex_host_min*1e3:.1f} ms, "
      f"{(ex_min-ex_host_min)*1e3:+.1f} ms); 100 modules: bash floor {floor*1e3:.0f} ms, "
      f"disco {big*1e3:.0f} ms (host network {big_host*1e3:.0f} ms) -> disco / floor = {big/floor:.2f}x")
if "100 modules: baseline dance --noop" in r:
    base, ex_base = r["100 modules: baseline dance --noop"], r["example: baseline dance --noop"]
    print(f"baseline (same run): example dance {ex_base*1e3:.1f} ms; 100 modules {base*1e3:.0f} ms "
          f"-> baseline / floor = {base/floor:.2f}x; this build / baseline = {big/base:.2f}x")
PY
