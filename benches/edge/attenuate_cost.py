#!/usr/bin/env python3
"""attenuate_cost.py - issue 16: what a peer create costs through a derived (attenuated) WireGuard
token next to a plain one, at 1k peers, in one run.

Run with:  python3 benches/edge/attenuate_cost.py [--binary target/release/sixpn] [--peers 1000]
           [--probes 400] [--json target/attenuate_cost.json]

It starts `sixpn serve` (SQLite in a temporary data dir, free ports on 127.0.0.1, the per-token
rate limit lifted like benches/scale/scale.py does), mints one token, grows org `personal` to
--peers peers with it, derives a token from it offline with `sixpn token attenuate --group
default --expires 1h` (no peer-name limit, so every probe can create a new name; the server
verifies the same signature chain whatever the caveats), then makes --probes sequential creates
alternating plain / derived on one keep-alive connection, and prints p50/p99 of each and the
ratio. The target is derived p50 within 10 % of plain p50. Only the Python standard library.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scale"))
from scale import Http, Server, log, new_pubkey, pct  # noqa: E402

ADMIN = "attenuate-cost-admin-token-0123456789abcdef"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/sixpn")
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=400)
    ap.add_argument("--json")
    ap.add_argument("--rust-log", default="warn")
    a = ap.parse_args()

    binary = os.path.abspath(a.binary)
    work = tempfile.mkdtemp(prefix="sixpn-attenuate-")
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir)
    server = Server(binary, data_dir, ADMIN, a.rust_log)
    try:
        server.start()
        c = Http("127.0.0.1", server.api_port)
        st, body = c.request("POST", "/api/v1/orgs/personal/wireguard_tokens", ADMIN, {"name": "bench"})
        if st != 201 and st != 200:
            sys.exit(f"mint: {st} {body!r}")
        plain = json.loads(body)["token"]
        env = dict(os.environ, SIXPN_WIREGUARD_TOKEN=plain, SIXPN_API_URL="http://127.0.0.1:9")
        out = subprocess.run([binary, "token", "attenuate", "--group", "default", "--expires", "1h"],
                             env=env, capture_output=True, text=True, check=True).stdout.strip()
        derived = out.split("=", 1)[1]
        log(f"derived token: {len(derived)} characters")

        log(f"growing to {a.peers} peers")
        for i in range(a.peers):
            st, body = c.request("POST", "/api/v3/wire_guard_peers", plain,
                                 {"name": f"grow-{i}", "group": "", "pubkey": new_pubkey(), "region": ""})
            if st != 200:
                sys.exit(f"grow: {st} {body!r}")

        times = {"plain": [], "derived": []}
        for i in range(a.probes):
            kind = "plain" if i % 2 == 0 else "derived"
            token = plain if kind == "plain" else derived
            t0 = time.perf_counter()
            st, body = c.request("POST", "/api/v3/wire_guard_peers", token,
                                 {"name": f"probe-{i}", "group": "", "pubkey": new_pubkey(), "region": ""})
            dt = (time.perf_counter() - t0) * 1000
            if st != 200:
                sys.exit(f"probe {kind}: {st} {body!r}")
            times[kind].append(dt)
        res = {}
        for kind, vals in times.items():
            vals.sort()
            res[kind] = {"p50_ms": statistics.median(vals), "p99_ms": pct(vals, 0.99), "n": len(vals)}
        ratio = res["derived"]["p50_ms"] / res["plain"]["p50_ms"]
        res["ratio_p50"] = ratio
        res["peers"] = a.peers + a.probes
        print(f"| token | creates | p50 ms | p99 ms |\n|---|---|---|---|")
        for kind in ("plain", "derived"):
            r = res[kind]
            print(f"| {kind} | {r['n']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
        print(f"\nderived / plain p50 = {ratio:.3f} (target <= 1.10) at ~{a.peers} peers")
        if a.json:
            os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
            with open(a.json, "w") as f:
                json.dump(res, f, indent=2)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
