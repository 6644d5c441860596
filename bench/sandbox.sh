#!/usr/bin/env bash
# Sandbox set-up and tear-down around `bash -c true`, against `bash -c true` alone and against a
# bare unshare + overlay mount + chroot done by hand, in one hyperfine run (root only).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
disco=$PWD/target/release/disco
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{u,w,m}
floor="unshare -m -p -f --propagation private sh -c 'mount -t overlay overlay -o lowerdir=/,upperdir=$work/u,workdir=$work/w,redirect_dir=off,metacopy=off,index=off,nodev $work/m && chroot $work/m bash -c true'"
# The same by hand, with the /proc, /sys and /dev a usable sandbox needs.
full="unshare -m -u -i -p -f --propagation private sh -c 'mount -t overlay overlay -o lowerdir=/,upperdir=$work/u,workdir=$work/w,redirect_dir=off,metacopy=off,index=off,nodev $work/m && mount -t proc proc $work/m/proc && mount -t sysfs -o ro sysfs $work/m/sys && mount -t tmpfs -o nodev tmpfs $work/m/dev && chroot $work/m bash -c true'"
hyperfine -N --warmup 5 --runs "${RUNS:-100}" --export-json "$work/sandbox.json" \
    -n 'bash -c true' 'bash -c true' \
    -n 'hand-made overlay+chroot' "$floor" \
    -n 'hand-made with proc+sys+dev' "$full" \
    -n 'disco shell -c true' "$disco --state-dir $work/state shell -c true"
python3 - "$work/sandbox.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
floor = r["hand-made overlay+chroot"]
print(f"median: bash {r['bash -c true']*1e3:.2f} ms, hand-made {floor*1e3:.2f} ms, "
      f"with proc+sys+dev {r['hand-made with proc+sys+dev']*1e3:.2f} ms, "
      f"disco {r['disco shell -c true']*1e3:.2f} ms -> disco / hand-made = {r['disco shell -c true']/floor:.2f}x, "
      f"disco / hand-made with proc+sys+dev = {r['disco shell -c true']/r['hand-made with proc+sys+dev']:.2f}x")
PY
