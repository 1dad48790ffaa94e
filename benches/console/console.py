#!/usr/bin/env python3
"""console.py - the admin console's scale bench of issue 19.

Run with:  python3 benches/console/console.py --peers 100000 --json target/console-bench/results.json

It starts a release `sixpn serve` itself (SQLite, a temporary data dir, free ports on 127.0.0.1;
the server and HTTP/DNS clients of benches/scale/scale.py), then:

1. seeds --peers peers in one org (`personal`) through the real API (POST /api/v3/wire_guard_peers,
   --concurrency keep-alive clients), in --groups groups (`g<i % groups>`);
2. signs in to /ui with the admin token (POST /ui/login, the session cookie), and times GET of
   every console page --repeat times, one client, keep-alive: the overview, the org page's first
   page (peers, groups, tokens, the network picture), a deep page (a cursor 90 % into the names),
   a search, a DNS look-up of a group and of a peer, and the audit log; prints p50/p95/max per
   page. The pages' budget (issue 19) is 100 ms p95;
3. measures DNS queries per second with dnsperf (Debian `dnsperf`; UDP, --dns-seconds per run,
   names of seeded peers) with 0 and with --consoles open consoles, interleaved A B A B ...
   (--rounds each), while peers are created at a steady --create-rate so the live feed carries
   events. An open console is what console.js does: it holds `GET /ui/orgs/{org}/events` (server-
   sent events) and, on a new generation, fetches the org page again 100 ms later (one fetch in
   flight at a time).

Only the Python 3 standard library (and dnsperf for step 3) is used.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scale"))
import scale  # noqa: E402
from scale import Dns, Http, Server, log, new_pubkey, pct  # noqa: E402

ORG = "personal"


class Web(Http):
    """Http with arbitrary headers and a form body (the console's login)."""

    def raw(self, method, path, headers=(), body=b""):
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.addr[0]}:{self.addr[1]}\r\n"
        for k, v in headers:
            head += f"{k}: {v}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        msg = head.encode() + body
        for attempt in range(2):
            fresh = self.sock is None
            try:
                if fresh:
                    self._connect()
                self.sock.sendall(msg)
                return self._response_with_headers()
            except (ConnectionError, OSError):
                self.close()
                if fresh or attempt:
                    raise
        raise ConnectionError("unreachable")

    def _response_with_headers(self):
        lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k.strip().lower(), v.strip())
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                n = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if n == 0:
                    self._read_until(b"\r\n")
                    break
                body += self._read_n(n)
                self._read_until(b"\r\n")
        else:
            body = self._read_n(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


def login(port, key):
    """Signs in to the console; returns the Cookie header value."""
    c = Web("127.0.0.1", port)
    body = urllib.parse.urlencode({"key": key}).encode()
    st, headers, data = c.raw("POST", "/ui/login",
                              [("Content-Type", "application/x-www-form-urlencoded")], body)
    c.close()
    if st != 303 or "set-cookie" not in headers:
        sys.exit(f"console sign-in: HTTP {st} {data[:300]!r}")
    return headers["set-cookie"].split(";", 1)[0]


def seed(server, admin_token, n, groups, concurrency):
    """Creates n peers p0..p{n-1} through the API; returns seconds taken."""
    c = Http("127.0.0.1", server.api_port)
    st, data = c.request("POST", f"/api/v1/orgs/{ORG}/wireguard_tokens", admin_token,
                         {"name": "console-bench"})
    c.close()
    if st != 201:
        sys.exit(f"mint: HTTP {st} {data[:300]!r}")
    token = json.loads(data)["token"]
    lock = threading.Lock()
    state = {"next": 0}
    errors = []

    def worker():
        client = Http("127.0.0.1", server.api_port)
        while not errors:
            with lock:
                i = state["next"]
                if i >= n:
                    return
                state["next"] += 1
            body = {"name": f"p{i}", "group": f"g{i % groups}", "pubkey": new_pubkey()}
            st, data = client.request("POST", "/api/v3/wire_guard_peers", token, body)
            if st != 200:
                errors.append(f"create p{i}: HTTP {st} {data[:300]!r}")
            if i and i % 10000 == 0:
                log(f"  seeded {i}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(errors[0])
    return time.perf_counter() - t0, token


def time_pages(port, cookie, n, repeat, prefix="p"):
    """GETs each console page `repeat` times; returns {page: (p50, p95, max, bytes)} in ms."""
    deep = f"{prefix}{int(n * 0.9)}"
    pages = [
        ("overview", "/ui"),
        ("org page 1 (peers, groups, tokens, picture)", f"/ui/orgs/{ORG}"),
        (f"org page, deep (after={deep})", f"/ui/orgs/{ORG}?after={deep}"),
        (f"search q={prefix}4242", f"/ui/orgs/{ORG}?q={prefix}4242"),
        ("DNS look-up g7._g.internal", f"/ui/orgs/{ORG}?lookup=g7._g.internal"),
        (f"DNS look-up {prefix}123._peer.internal", f"/ui/orgs/{ORG}?lookup={prefix}123._peer.internal"),
        ("audit log", f"/ui/orgs/{ORG}/audit"),
    ]
    c = Web("127.0.0.1", port)
    out = {}
    for name, path in pages:
        times = []
        size = 0
        for _ in range(repeat):
            t = time.perf_counter()
            st, _, body = c.raw("GET", path, [("Cookie", cookie)])
            times.append((time.perf_counter() - t) * 1000)
            if st != 200:
                sys.exit(f"GET {path}: HTTP {st} {body[:300]!r}")
            size = len(body)
        times.sort()
        out[name] = (pct(times, 0.5), pct(times, 0.95), times[-1], size)
        log(f"  {name}: p50 {out[name][0]:.1f} ms, p95 {out[name][1]:.1f} ms, {size} bytes")
    c.close()
    return out


class Console(threading.Thread):
    """An open org page: the event stream, and a fetch of the page after each new generation."""

    def __init__(self, port, cookie, stop):
        super().__init__(daemon=True)
        self.port, self.cookie, self.stop = port, cookie, stop
        self.events = 0
        self.fetches = 0
        self.sock = None

    def run(self):
        page = Web("127.0.0.1", self.port)
        s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        self.sock = s
        s.sendall((f"GET /ui/orgs/{ORG}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Cookie: {self.cookie}\r\nAccept: text/event-stream\r\n\r\n").encode())
        buf = b""
        seen = None
        due = None
        while not self.stop.is_set():
            try:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
            except socket.timeout:
                pass
            events = list(re.finditer(rb"event: ?generation\r?\ndata: ?(\d+)\r?\n\r?\n", buf))
            for m in events:
                gen = m.group(1)
                self.events += 1
                if seen is not None and gen != seen and due is None:
                    due = time.monotonic() + 0.1
                seen = gen
            if events:
                buf = buf[events[-1].end():]
            elif len(buf) > 65536:
                buf = buf[-1024:]
            if due is not None and time.monotonic() >= due:
                due = None
                st, _, _ = page.raw("GET", f"/ui/orgs/{ORG}", [("Cookie", self.cookie)])
                if st == 200:
                    self.fetches += 1
        s.close()
        page.close()


def dnsperf(port, names_file, seconds):
    out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", names_file,
                          "-l", str(seconds), "-c", "4", "-q", "200"],
                         capture_output=True, text=True, check=True).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = re.search(r"Queries lost:\s+(\d+)", out).group(1)
    return qps, int(lost)


def creator(port, token, start, rate, stop, count):
    """Creates peers c<start>, ... at `rate` per second until `stop`."""
    c = Http("127.0.0.1", port)
    i = start
    t0 = time.monotonic()
    while not stop.is_set():
        body = {"name": f"c{i}", "group": "churn", "pubkey": new_pubkey()}
        st, data = c.request("POST", "/api/v3/wire_guard_peers", token, body)
        if st != 200:
            log(f"  steady create c{i}: HTTP {st} {data[:200]!r}")
        i += 1
        count[0] += 1
        wait = t0 + (i - start) / rate - time.monotonic()
        if wait > 0:
            stop.wait(wait)
    c.close()
    return i


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/sixpn")
    ap.add_argument("--peers", type=int, default=100000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", choices=["api", "direct"], default="api",
                    help="api: POST each peer (names p<i>, --groups groups); direct: stop the server "
                         "and insert them into SQLite with benches/scale/scale.py's seeder (names m<i>, "
                         "500 groups), then start it again")
    ap.add_argument("--repeat", type=int, default=100, help="GETs per page")
    ap.add_argument("--consoles", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="dnsperf runs per side")
    ap.add_argument("--dns-seconds", type=int, default=10)
    ap.add_argument("--create-rate", type=float, default=5.0, help="creates/s during the DNS runs")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    a = ap.parse_args()
    if not os.path.exists(a.binary):
        sys.exit(f"{a.binary} missing: cargo build --release --bin sixpn")
    a.binary = os.path.abspath(a.binary)
    have_dnsperf = shutil.which("dnsperf") is not None

    tmp = tempfile.mkdtemp(prefix="sixpn-console-bench-")
    data_dir = os.path.join(tmp, "data")
    os.makedirs(data_dir)
    admin = "console-bench-admin-token-0123456789abcdef"
    server = Server(a.binary, data_dir, admin, "warn")
    results = {"peers": a.peers, "groups": a.groups}
    try:
        server.start()
        prefix = "p"
        if a.seed == "api":
            log(f"seeding {a.peers} peers in {a.groups} groups through the API ({a.concurrency} clients)")
            took, token = seed(server, admin, a.peers, a.groups, a.concurrency)
        else:
            log(f"seeding {a.peers} peers into SQLite directly (benches/scale/scale.py)")
            _, token = seed(server, admin, 1, 1, 1)
            server.stop()
            _, took, _, _ = scale.seed(os.path.join(data_dir, "sixpn.db"), a.peers + 1, "console-bench")
            server.start()
            prefix = "m"
        results["seed"] = a.seed
        results["seed_s"] = took
        log(f"seeded in {took:.0f} s ({a.peers / took:.0f}/s); RSS {server.rss_mb():.0f} MB")
        cookie = login(server.api_port, admin)
        # A first GET of each page warms the group summary; then the timed runs.
        time_pages(server.api_port, cookie, a.peers, 1, prefix)
        log(f"timing every console page {a.repeat} times")
        results["pages_ms"] = time_pages(server.api_port, cookie, a.peers, a.repeat, prefix)

        if not have_dnsperf:
            log("dnsperf not installed (apt-get install dnsperf): skipping the DNS side by side")
        else:
            names = os.path.join(tmp, "names.txt")
            with open(names, "w") as f:
                for i in range(0, a.peers, max(1, a.peers // 20000)):
                    f.write(f"{prefix}{i}._peer.internal AAAA\n")
            created = [0]
            next_c = 0
            rows = []
            for r in range(a.rounds):
                for consoles in (0, a.consoles):
                    stop = threading.Event()
                    opened = [Console(server.api_port, cookie, stop) for _ in range(consoles)]
                    for c in opened:
                        c.start()
                    time.sleep(1 if consoles else 0)
                    before = created[0]
                    cstop = threading.Event()
                    out = {}
                    ct = threading.Thread(target=lambda: out.setdefault(
                        "next", creator(server.api_port, token, next_c, a.create_rate, cstop, created)))
                    ct.start()
                    cpu0 = server.cpu_s()
                    qps, lost = dnsperf(server.dns_port, names, a.dns_seconds)
                    cpu = server.cpu_s() - cpu0
                    cstop.set()
                    ct.join()
                    next_c = out["next"]
                    stop.set()
                    for c in opened:
                        c.join(timeout=5)
                    row = {"round": r + 1, "consoles": consoles, "qps": qps, "lost": lost,
                           "creates": created[0] - before,
                           "events": sum(c.events for c in opened),
                           "page_fetches": sum(c.fetches for c in opened),
                           "server_cpu_s": cpu}
                    rows.append(row)
                    log(f"  round {r + 1}, {consoles:2d} consoles: {qps:,.0f} qps (lost {lost}), "
                        f"{row['creates']} creates, {row['events']} events, "
                        f"{row['page_fetches']} page fetches, server CPU {cpu:.1f} s")
            results["dns"] = rows
            for consoles in (0, a.consoles):
                q = [r["qps"] for r in rows if r["consoles"] == consoles]
                log(f"DNS with {consoles} consoles: median {statistics.median(q):,.0f} qps ({', '.join(f'{x:,.0f}' for x in q)})")
        print("\n| page | p50 ms | p95 ms | max ms | bytes |\n|---|---:|---:|---:|---:|")
        for name, (p50, p95, mx, size) in results["pages_ms"].items():
            print(f"| {name} | {p50:.1f} | {p95:.1f} | {mx:.1f} | {size:,} |")
        if "dns" in results:
            print("\n| round | consoles | DNS qps | lost | creates | SSE events | page fetches | server CPU s |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in results["dns"]:
                print(f"| {r['round']} | {r['consoles']} | {r['qps']:,.0f} | {r['lost']} | {r['creates']} | {r['events']} | {r['page_fetches']} | {r['server_cpu_s']:.1f} |")
        if a.json:
            os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
            with open(a.json, "w") as f:
                json.dump(results, f, indent=2)
    finally:
        server.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
