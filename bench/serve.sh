#!/bin/bash
# Benchmark of `disco serve` (a benchmark, not a test), in one run:
#  1. the floor: the same module run N times by `xargs -P 16`, no host at all: fixes per second;
#  2. throughput: N Alertmanager-format webhooks (one alert each, each for its own target)
#     posted at concurrency 16 with keep-alive to a server with --max-concurrent 16; fixes per
#     second from the first arrival to the last outcome in the history, and its ratio to the
#     floor (goal: at least 85%);
#  3. dispatch latency while capacity is free: alerts paced at RATE/s; p50/p99 of the time from
#     the request's arrival to the module's first instruction (the module logs $EPOCHREALTIME;
#     goal: p99 under 20 ms);
#  4. history size: start-up (exec to "listening") and a page by time (GET /fixes?since= the
#     history's middle, 100 fixes of one host) with a history of HIST fixes and their outcomes
#     (200 MB for the default 500,000), against the floor: the same with 2,000 fixes (a full
#     page after the middle); medians of ROUNDS runs and their ratios (goal: under 3x, as
#     neither reads the whole history; tests/serve.rs checks that by bytes read, this says
#     what it costs in time).
# The module answers at once (bash, reads its request, prints a SurvivorFixResult). Load goes to
# 127.0.0.1 only, bounded in count (N, RATE x 5 s) and in time (every step under `timeout`).
#
# Usage: bench/serve.sh [DISCO_BINARY]   (default: builds and uses target/release/disco)
# Env: N (default 3000), RATE (default 100), JOBS (--max-concurrent, default 16), HIST (default
# 500000), ROUNDS (default 7).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
disco=${1:-}
if [ -z "$disco" ]; then
    (cd "$here" && cargo build --release -p disco >/dev/null)
    disco=${CARGO_TARGET_DIR:-$here/target}/release/disco
fi
N=${N:-3000}
RATE=${RATE:-100}
JOBS=${JOBS:-16}
HIST=${HIST:-500000}
ROUNDS=${ROUNDS:-7}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/mod/fix"
cat > "$work/mod/fix/now" <<MOD
#!/bin/bash
echo "\$DISCO_HOST \$EPOCHREALTIME" >> $work/starts
cat >/dev/null
printf '<?xml version="1.0" encoding="iso-8859-1"?>\n<SurvivorFixResult Version="1.0">\n<ReturnCode>0</ReturnCode>\n<Comment>ok</Comment>\n</SurvivorFixResult>\n'
MOD
chmod 755 "$work/mod/fix/now"
"$disco" request --timeout 45 > "$work/req.xml"

# 1. The floor: N runs of the module at concurrency 16, each exec'd by xargs itself (no shell in
#    between; its stdin is /dev/null, the ~200-byte request being no measurable work).
start=$(date +%s.%N)
seq "$N" | DISCO_HOST=floor timeout 600 xargs -P 16 -I{} "$work/mod/fix/now" > /dev/null
end=$(date +%s.%N)
floor=$(python3 -c "import sys; n, a, b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'{n / (b - a):.1f}')" "$N" "$start" "$end")
echo "floor: $N runs of the module by xargs -P 16 (no host): $floor fixes/s"

printf '[[rule]]\nmodule = "now"\nservice = "bench"\nlock = "none"\n' > "$work/rules.toml"
"$disco" --state-dir "$work/state" serve --listen 127.0.0.1:0 --rules "$work/rules.toml" \
    --module-dir "$work/mod" --lock-dir "$work/locks" --max-concurrent "$JOBS" \
    --max-queue 100000 -q > "$work/addr" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/addr" 2>/dev/null && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$work/addr")
echo "== disco serve on $addr, --max-concurrent $JOBS, $(nproc) cores"

timeout 900 python3 - "$addr" "$N" "$RATE" "$work" "$floor" <<'PY'
import http.client, json, sys, threading, time
addr, n, rate, work, floor = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
host, port = addr.rsplit(":", 1)

def conn():
    return http.client.HTTPConnection(host, int(port), timeout=60)

def body(tag):
    return json.dumps({"version": "4", "status": "firing", "receiver": "disco",
        "alerts": [{"status": "firing", "labels": {"alertname": "B", "instance": tag},
                    "fingerprint": tag}]})

def post(c, tag):
    c.request("POST", "/alertmanager", body(tag), {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    return r.status

def history():
    # Every page of the history (GET /fixes is paged: limit, and the next page's cursor).
    out, cursor = [], ""
    while True:
        c = conn()
        c.request("GET", "/fixes?limit=1000" + cursor)
        r = c.getresponse(); out += json.loads(r.read())
        nxt = r.getheader("X-Disco-Next-Cursor")
        if not nxt:
            return out
        cursor = "&cursor=" + nxt

def health():
    c = conn(); c.request("GET", "/healthz")
    return json.loads(c.getresponse().read())

def settle(count):
    # Wait on /healthz (a few counters), not /fixes: reading the whole history every tick
    # would take the server's CPU from the fixes being measured. Once nothing is queued or
    # running, read the history (again, while the last outcomes are still being recorded).
    until = time.time() + 600
    while time.time() < until:
        h = health()
        if h["queued"] == 0 and h["running"] == 0:
            fixes = history()
            if len(fixes) >= count and all(f["status"] != "pending" for f in fixes):
                return fixes
        time.sleep(0.05)
    sys.exit("the fixes did not settle within 600 s")

def starts():
    s = {}
    for line in open(work + "/starts"):
        h, t = line.split(); s[h] = float(t)
    return s

# 2. Throughput at concurrency 16.
tags = [f"t{i}" for i in range(n)]
lock = threading.Lock(); codes = {}
def worker():
    c = conn()
    while True:
        with lock:
            if not tags: return
            tag = tags.pop()
        st = post(c, tag)
        with lock: codes[st] = codes.get(st, 0) + 1
t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
posted = time.time() - t0
fixes = settle(n)
ran = [f for f in fixes if f["status"] == "ran"]
first = min(f["time"] for f in ran); last = max(f["outcome"]["time"] for f in ran)
fps = len(ran) / (last - first)
print(f"throughput: {n} webhooks posted in {posted:.2f} s ({n / posted:.0f}/s, answers {codes}); "
      f"{len(ran)} fixes ran in {last - first:.2f} s: {fps:.1f} fixes/s")
print(f"ratio to the floor: {fps:.1f} / {floor:.1f} = {fps / floor * 100:.1f}% (goal >= 85%)")

# 3. Dispatch latency at RATE/s (capacity free).
m = int(rate * 5)
c = conn()
t0 = time.time()
for i in range(m):
    time.sleep(max(0, t0 + i / rate - time.time()))
    post(c, f"p{i}")
fixes = settle(n + m)
s = starts()
lat = sorted((s[f["host"]] - f["time"]) * 1e3 for f in fixes if f["host"].startswith("p") and f["host"] in s)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"dispatch (request to module start) at {rate:.0f}/s: {len(lat)} fixes, "
      f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms (goal < 20 ms), max {lat[-1]:.2f} ms")
PY

# 4. History size: the server of steps 2 and 3 is stopped first, so that it takes no CPU.
kill "$pid" && wait "$pid" 2>/dev/null || true
pid=
timeout 900 python3 - "$disco" "$work" "$HIST" "$ROUNDS" <<'PY'
import http.client, os, statistics, subprocess, sys, time
disco, work, hist, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
now = time.time()
span = 30 * 86400.0

def history(name, n):
    # n fixes and their outcomes over the last 30 days, as the server writes them.
    d = f"{work}/{name}/history"
    os.makedirs(d)
    with open(d + "/serve.jsonl", "w", buffering=1 << 20) as f:
        for i in range(n):
            t = now - span + span * i / n
            f.write(f'{{"type":"fix","time":{t},"id":"old-{i}","request":"old-r{i}",'
                    f'"fingerprint":"{i:016x}","alertname":"DiskFull","rule":"disk",'
                    f'"host":"h{i % 10}","service":"disk","module":"/usr/lib/disco/mod/fix/cleanup",'
                    f'"options":{{"mount":["/var"]}},"decision":"queued"}}\n')
            f.write(f'{{"type":"outcome","time":{t + 0.5},"id":"old-{i}","started":{t},'
                    f'"return_code":0,"comment":"cleaned","outcome":{{}}}}\n')
    return os.path.getsize(d + "/serve.jsonl")

def start(name):
    # The server on `name`'s state, and the seconds from exec to its "listening" line.
    t0 = time.time()
    p = subprocess.Popen([disco, "--state-dir", f"{work}/{name}", "serve", "--listen",
                          "127.0.0.1:0", "--rules", f"{work}/rules.toml", "--module-dir",
                          f"{work}/mod", "--lock-dir", f"{work}/locks", "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    took = time.time() - t0
    if not line.startswith("listening on "):
        p.kill(); p.wait()
        sys.exit(f"disco serve on {name} did not start")
    return p, line.split()[-1], took

def stop(p):
    p.terminate()
    p.wait(timeout=60)

def page(addr, since):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    t0 = time.time()
    c.request("GET", f"/fixes?since={since}&limit=100&host=h0")
    r = c.getresponse(); r.read()
    took = time.time() - t0
    if r.status != 200:
        sys.exit(f"GET /fixes answered {r.status}")
    return took

def measure(name):
    starts, pages = [], []
    since = now - span / 2
    for _ in range(rounds):
        p, addr, took = start(name)
        try:
            starts.append(took)
            pages += [page(addr, since) for _ in range(5)]
        finally:
            stop(p)
    return statistics.median(starts), statistics.median(pages)

small, big = history("small", 2000), history("big", hist)
floor_start, floor_page = measure("small")
big_start, big_page = measure("big")
print(f"history floor: {small} bytes: start-up {floor_start * 1e3:.1f} ms, page by time "
      f"{floor_page * 1e3:.1f} ms (medians of {rounds} and {rounds * 5})")
print(f"history of {hist} fixes, {big} bytes: start-up {big_start * 1e3:.1f} ms "
      f"({big_start / floor_start:.2f}x the floor), page by time {big_page * 1e3:.1f} ms "
      f"({big_page / floor_page:.2f}x the floor) (goal: under 3x)")
PY
