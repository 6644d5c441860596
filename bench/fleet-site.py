#!/usr/bin/env python3
"""The fleet benchmarks' site: fleet-site.py SITE NODES MODULES FILES.

MODULES modules (each a template, a script, FILES files of about 10 kB, and every tenth
without a requirement, the others requiring the one before), nodes n001.fleet... that run
every module, and nodes 3 and 7 with another NTP server (the difference `fleet diff` must
find). The defaults of bench/fleet.sh, 50 modules of 40 files, make 2,000 files and 20 MB.
"""
import os, random, sys
site, nodes, modules, files = sys.argv[1], *map(int, sys.argv[2:])
rnd = random.Random(17)
def put(rel, text, mode=0o644):
    path = os.path.join(site, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
for m in range(1, modules + 1):
    mod = f"modules/mod{m:02d}"
    put(f"{mod}/requires", f"mod{m - 1:02d}\n" if m > 1 and m % 10 else "")
    put(f"{mod}/parameters/mod{m:02d}/enabled", "yes\n")
    put(f"{mod}/templates/etc/fleet/mod{m:02d}.conf",
        f"echo module=mod{m:02d}\necho ntp=$(disco-param get $(hostname)/ntp_server)\n")
    put(f"{mod}/scripts/00-check", "#!/bin/sh\ntest -d /etc\n", 0o755)
    for f in range(files):
        lines = (" ".join(rnd.choice(words) for _ in range(12)) for _ in range(140))
        put(f"{mod}/files/usr/share/fleet/mod{m:02d}/data{f:02d}.txt", "\n".join(lines) + "\n")
put("parameters/disco/site/name", "fleet\n")
for i in range(1, nodes + 1):
    n = f"n{i:03d}.fleet"
    put(f"parameters/{n}/ntp_server", "ntp-b.fleet\n" if i in (3, 7) else "ntp-a.fleet\n")
    for m in range(1, modules + 1):
        put(f"parameters/{n}/modules/mod{m:02d}", "")
