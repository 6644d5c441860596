#!/usr/bin/env bash
# The live merge of a scratch layer (10,000 small files; 1,000 files of 1 MB) onto an empty
# folder, against `cp -a` of the same layer, and `cp -a` plus one syncfs (`sync -f`), in one
# hyperfine run. The merge stages, syncfs'es, renames and syncfs'es: its crash guarantee.
# Then the undo record (issue 19): the same 10,000 files merged over older versions of
# themselves, with and without keeping what they replace, and `disco rollback` of that merge.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
disco=$PWD/target/release/disco
work=$(mktemp -d "${TMPDIR:-/var/tmp}/disco-bench-merge.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/small/etc/app" "$work/big/srv/data"
for i in $(seq 1 10000); do echo "small file $i" > "$work/small/etc/app/f$i"; done
for i in $(seq 1 1000); do head -c 1048576 /dev/urandom > "$work/big/srv/data/f$i"; done
for layer in small big; do
    # -N runs the prepare command without a shell too: it gets one of its own.
    hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$work/$layer.json" \
        --prepare "sh -c 'rm -rf $work/live && mkdir $work/live'" \
        -n "cp -a" "cp -a $work/$layer/. $work/live/" \
        -n "cp -a + sync -f" "sh -c 'cp -a $work/$layer/. $work/live/ && sync -f $work/live'" \
        -n "disco merge" "$disco --state-dir $work/state __apply --upper $work/$layer --live $work/live"
    python3 - "$work/$layer.json" "$layer" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
n = 10000 if sys.argv[2] == "small" else 1000
print(f"{sys.argv[2]}: cp -a {r['cp -a']*1e3:.0f} ms, cp -a + sync {r['cp -a + sync -f']*1e3:.0f} ms, "
      f"disco merge {r['disco merge']*1e3:.0f} ms ({n / r['disco merge']:.0f} files/s) -> "
      f"merge / cp -a = {r['disco merge']/r['cp -a']:.2f}x, merge / (cp -a + sync) = {r['disco merge']/r['cp -a + sync -f']:.2f}x")
PY
done

# Undo: every file replaces an older one, which the merge keeps aside (a second link).
mkdir -p "$work/base/etc/app"
for i in $(seq 1 10000); do echo "old file $i" > "$work/base/etc/app/f$i"; done
fresh="rm -rf $work/live $work/state && cp -a $work/base $work/live"
merge="$disco --state-dir $work/state __apply --upper $work/small --live $work/live"
hyperfine -N --warmup 1 --runs "${RUNS:-5}" --export-json "$work/undo.json" \
    --prepare "sh -c '$fresh'" -n "merge, no undo" "$merge --no-undo" \
    --prepare "sh -c '$fresh'" -n "merge with undo" "$merge" \
    --prepare "sh -c '$fresh && $merge >/dev/null 2>&1'" -n "rollback" \
    "$disco --state-dir $work/state rollback --root $work/live"
python3 - "$work/undo.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
plain, undo, back = r["merge, no undo"], r["merge with undo"], r["rollback"]
print(f"undo: merge without undo {plain*1e3:.0f} ms, with undo {undo*1e3:.0f} ms "
      f"(+{(undo/plain-1)*100:.1f}%, goal <= 10%), rollback {back*1e3:.0f} ms "
      f"= {back/undo:.2f}x the merge (goal <= 1.5x)")
PY
