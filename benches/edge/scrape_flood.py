#!/usr/bin/env python3
"""scrape_flood.py - issue 22, point 5: a /metrics scrape flood no longer slows peer creates.

Run with:  cargo build --release --bin sixpn
           python3 benches/edge/scrape_flood.py --peers 500000 [--json target/edge/scrape_flood.json]

Before issue 22 every scrape of /metrics ran a COUNT(*) over all peers: at 500k peers, 64 clients
scraping pushed a real create's p90 from 9 ms to 1.9 s. Now /metrics reads the per-org counts from
a cache refreshed at most every 5 s (single flight: one store query serves every scrape in that
window), so the flood costs the store nothing per scrape, and concurrent scrapes share one render
(each still gets a text rendered after it arrived), so it costs one render at a time.

What it does (Python 3 standard library only, loopback only, bounded by --rounds and --creates):
1. starts a release `sixpn serve` (SQLite in a temporary data dir, free ports on 127.0.0.1) with
   `[api] admin_listen` set, mints a token on the admin listener and creates one peer;
2. stops it, seeds the store directly up to --peers live peers (benches/scale/scale.py's `seed`:
   one SQLite transaction), starts it again and waits until the last seeded name answers in DNS;
3. runs --rounds rounds, each: --creates sequential creates on one keep-alive client with nothing
   else running (idle), then --creates more while --scrapers clients (spread over --procs
   processes, so the measuring client does not share an interpreter lock with them) GET /metrics
   back to back on the admin listener (flood);
4. prints create p50/p90/p99 idle and under the flood, the ratio of the p90s (target: at most 2),
   the scrapes served, and how many count queries the store ran for them
   (`sixpn_store_duration_seconds_count{op="org_counts"}`, each at its mean cost at this size):
   at most one per 5 s window, never one per scrape.
"""
import argparse
import json
import multiprocessing
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scale"))
import scale  # noqa: E402  (benches/scale/scale.py: Http, Server, seed, free_port, new_pubkey, pct)

ORG = scale.ORG
log = scale.log


def metric(text, name, *labels):
    """Sum of the samples of `name` whose label set contains every one of `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        rest = line[len(name):]
        if not (rest.startswith("{") or rest.startswith(" ")):
            continue
        if all(lab in line for lab in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scraper(port, go, stop, served, failed, busy_s):
    """One scraping process: a few threads, each a keep-alive client looping GET /metrics while
    `go` is set, until `stop` is set."""
    import threading

    def loop():
        head = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        sock, buf = None, b""
        n = bad = 0
        t_busy = 0.0
        while not stop.is_set():
            if not go.wait(0.2):
                continue
            t = time.perf_counter()
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                    buf = b""
                sock.sendall(head)
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                h, _, buf = buf.partition(b"\r\n\r\n")
                lines = h.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length = 0
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v)
                while len(buf) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                buf = buf[length:]
                if status == 200:
                    n += 1
                else:
                    bad += 1
            except OSError:
                bad += 1
                if sock:
                    sock.close()
                sock = None
            t_busy += time.perf_counter() - t
            if n + bad >= 50:
                with served.get_lock():
                    served.value += n
                with failed.get_lock():
                    failed.value += bad
                with busy_s.get_lock():
                    busy_s.value += t_busy
                n = bad = 0
                t_busy = 0.0
        with served.get_lock():
            served.value += n
        with failed.get_lock():
            failed.value += bad
        with busy_s.get_lock():
            busy_s.value += t_busy
        if sock:
            sock.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(THREADS_PER_PROC)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


THREADS_PER_PROC = 8


def creates(client, token, prefix, n, groups=500):
    """`n` sequential creates; their latencies in ms, sorted."""
    out = []
    for i in range(n):
        body = {"name": f"{prefix}-{i}", "group": f"g{i % groups}", "pubkey": scale.new_pubkey()}
        t = time.perf_counter()
        st, data = client.request("POST", "/api/v3/wire_guard_peers", token, body)
        dt = (time.perf_counter() - t) * 1000
        if st != 200:
            sys.exit(f"create {prefix}-{i}: HTTP {st} {data[:300]!r}")
        out.append(dt)
    return sorted(out)


def summary(ms):
    return {"n": len(ms), "p50_ms": scale.pct(ms, 0.50), "p90_ms": scale.pct(ms, 0.90),
            "p99_ms": scale.pct(ms, 0.99), "max_ms": ms[-1] if ms else float("nan")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--binary", default="target/release/sixpn")
    ap.add_argument("--peers", type=int, default=500_000, help="live peers seeded into the org (default 500000)")
    ap.add_argument("--scrapers", type=int, default=64, help="concurrent /metrics clients (default 64)")
    ap.add_argument("--creates", type=int, default=100, help="sequential creates per phase per round (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="idle + flood rounds, interleaved (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir and server log")
    ap.add_argument("--workdir", default=None, help="parent of the temporary dir (default $TMPDIR)")
    ap.add_argument("--json", default=None, help="also write the raw figures to this file")
    ap.add_argument("--rust-log", default="warn")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no executable {binary}: build it with `cargo build --release --bin sixpn`")
    global THREADS_PER_PROC
    procs = max(1, (a.scrapers + THREADS_PER_PROC - 1) // THREADS_PER_PROC)
    THREADS_PER_PROC = max(1, a.scrapers // procs)
    scrapers = procs * THREADS_PER_PROC
    cmdline = "python3 " + " ".join(shlex.quote(x) for x in sys.argv)

    work = tempfile.mkdtemp(prefix="sixpn-scrape-", dir=a.workdir)
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir)
    admin_port = scale.free_port()
    # scale.Server passes its own environment on to `sixpn serve`.
    os.environ["SIXPN_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
    server = scale.Server(binary, data_dir, "scrape-" + os.urandom(16).hex(), a.rust_log)
    while admin_port in (server.api_port, server.dns_port):
        admin_port = scale.free_port()
        os.environ["SIXPN_ADMIN_LISTEN"] = f"127.0.0.1:{admin_port}"
    log(f"work dir {work}; API 127.0.0.1:{server.api_port}, admin 127.0.0.1:{admin_port}, "
        f"DNS 127.0.0.1:{server.dns_port}")

    def admin(method, path, body=None):
        c = scale.Http("127.0.0.1", admin_port)
        try:
            st, data = c.request(method, path, server.admin_token, body)
        finally:
            c.close()
        if st // 100 != 2:
            sys.exit(f"admin {method} {path}: HTTP {st} {data[:300]!r}")
        return data

    def scrape():
        c = scale.Http("127.0.0.1", admin_port)
        try:
            st, data = c.request("GET", "/metrics")
        finally:
            c.close()
        if st != 200:
            sys.exit(f"/metrics: HTTP {st}")
        return data.decode()

    results = {"command": cmdline, "peers": a.peers, "scrapers": scrapers, "rounds": []}
    ctx = multiprocessing.get_context("fork")
    go, stop = ctx.Event(), ctx.Event()
    served, failed, busy_s = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("d", 0.0)
    pool = []
    try:
        server.start()
        # The public listener does not serve the admin plane.
        c = scale.Http("127.0.0.1", server.api_port)
        st, _ = c.request("GET", "/metrics")
        c.close()
        if st != 404:
            sys.exit(f"/metrics on the public listener: HTTP {st}, expected 404")
        token_name = f"flood-{os.urandom(3).hex()}"
        token = json.loads(admin("POST", f"/api/v1/orgs/{ORG}/wireguard_tokens", {"name": token_name}))["token"]
        c = scale.Http("127.0.0.1", server.api_port)
        creates(c, token, "first", 1)  # the seed copies the region of one API-created peer
        c.close()
        log("stopping the server to seed the store")
        server.stop()
        log(f"seeding up to {a.peers:,} peers")
        k, seed_s, last, last_addr = scale.seed(os.path.join(data_dir, "sixpn.db"), a.peers, token_name)
        log(f"seeded {k:,} peers in {seed_s:.1f} s; starting the server")
        st = server.start(probe_name=last, probe_address=last_addr)
        log(f"up in {st['startup_s']:.2f} s, RSS {server.rss_mb():.0f} MB")
        results["startup_s"] = st["startup_s"]

        first = scrape()
        peers_gauge = metric(first, "sixpn_org_peers", f'org="{ORG}"')
        log(f"sixpn_org_peers{{org=\"{ORG}\"}} = {peers_gauge:,.0f}")
        results["org_peers_gauge"] = peers_gauge

        for _ in range(procs):
            p = ctx.Process(target=scraper, args=(admin_port, go, stop, served, failed, busy_s), daemon=True)
            p.start()
            pool.append(p)

        client = scale.Http("127.0.0.1", server.api_port)
        creates(client, token, "warm", 20)
        idle_all, flood_all = [], []
        before = scrape()
        q0 = metric(before, "sixpn_store_duration_seconds_count", 'op="org_counts"')
        s0 = metric(before, "sixpn_api_requests_total", 'route="/metrics"')
        flood_s = 0.0
        t_start = time.perf_counter()
        for r in range(a.rounds):
            c0 = server.cpu_s()
            t = time.perf_counter()
            idle = creates(client, token, f"idle{r}", a.creates)
            idle_cores = (server.cpu_s() - c0) / (time.perf_counter() - t)
            go.set()
            time.sleep(0.5)  # every scraper connected and going
            with served.get_lock():
                served.value = 0
            c0 = server.cpu_s()
            t = time.perf_counter()
            flood = creates(client, token, f"flood{r}", a.creates)
            dt = time.perf_counter() - t
            flood_cores = (server.cpu_s() - c0) / dt
            n = served.value
            go.clear()
            time.sleep(0.3)
            flood_s += dt
            rd = {"idle": summary(idle), "flood": summary(flood), "scrapes_per_s": n / dt,
                  "server_cores_idle": idle_cores, "server_cores_flood": flood_cores,
                  "loadavg": os.getloadavg()[0]}
            results["rounds"].append(rd)
            log(f"round {r + 1}: create p90 idle {rd['idle']['p90_ms']:.1f} ms, under the flood "
                f"{rd['flood']['p90_ms']:.1f} ms ({n / dt:.0f} scrapes/s; server CPU {idle_cores:.2f} "
                f"cores idle, {flood_cores:.2f} under the flood; load average {rd['loadavg']:.1f} "
                f"on {os.cpu_count()} CPUs)")
            idle_all += idle
            flood_all += flood
        elapsed = time.perf_counter() - t_start
        after = scrape()
        queries = metric(after, "sixpn_store_duration_seconds_count", 'op="org_counts"') - q0
        scrapes = metric(after, "sixpn_api_requests_total", 'route="/metrics"') - s0
        q_sum = metric(after, "sixpn_store_duration_seconds_sum", 'op="org_counts"')
        q_n = metric(after, "sixpn_store_duration_seconds_count", 'op="org_counts"')
        idle_all.sort()
        flood_all.sort()
        results.update({
            "idle": summary(idle_all), "flood": summary(flood_all),
            "p90_ratio": scale.pct(flood_all, 0.9) / scale.pct(idle_all, 0.9),
            "scrapes": scrapes, "scrape_errors": failed.value, "elapsed_s": elapsed,
            "flood_s": flood_s, "count_queries": queries,
            "count_query_mean_ms": q_sum / q_n * 1000 if q_n else float("nan"),
            "count_queries_allowed": 1 + int(elapsed // 5),
        })
    finally:
        stop.set()
        go.set()
        for p in pool:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        server.stop()
        warnings = scale.server_warnings(server.log_path)
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["server_warnings"] = warnings

    r = results
    lines = [
        f"# /metrics scrape flood at {a.peers:,} peers ({scrapers} scrapers, {a.rounds} rounds of "
        f"{a.creates} creates per phase)",
        "",
        f"`{cmdline}`",
        "",
        "| phase | creates | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("idle", "flood"):
        s = r[name]
        lines.append(f"| {name} | {s['n']} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['p99_ms']:.1f} | "
                     f"{s['max_ms']:.1f} |")
    ok_ratio = r["p90_ratio"] <= 2.0
    ok_queries = r["count_queries"] <= r["count_queries_allowed"]
    lines += [
        "",
        f"- create p90 under the flood / idle: **{r['p90_ratio']:.2f}x** (target at most 2x: "
        f"{'met' if ok_ratio else 'NOT met'})",
        f"- scrapes served: {r['scrapes']:,.0f} ({r['scrapes'] / r['flood_s']:.0f}/s during the flood; "
        f"{r['scrape_errors']} failed)",
        f"- count queries the store ran for them: {r['count_queries']:.0f} in {r['elapsed_s']:.0f} s "
        f"(at most one per 5 s window: {r['count_queries_allowed']}; "
        f"{'met' if ok_queries else 'NOT met'}), each {r['count_query_mean_ms']:.0f} ms on average "
        f"at this size",
        f"- sixpn_org_peers{{org=\"{ORG}\"}} after the seed: {r['org_peers_gauge']:,.0f}",
        "- per round: " + "; ".join(
            f"p90 {x['idle']['p90_ms']:.1f} -> {x['flood']['p90_ms']:.1f} ms, {x['scrapes_per_s']:.0f} "
            f"scrapes/s, server {x['server_cores_flood']:.2f} cores, load {x['loadavg']:.1f}"
            for x in r["rounds"]),
    ]
    if warnings:
        lines.append(f"- server warnings: {warnings}")
    print("\n".join(lines), flush=True)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    if not (ok_ratio and ok_queries):
        sys.exit(1)


if __name__ == "__main__":
    main()
