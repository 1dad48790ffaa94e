#!/usr/bin/env python3
"""dns_tcp_flood.py - issue 22, point 2: a DNS-over-TCP connection flood must leave the API answering.

Run with:  python3 benches/edge/dns_tcp_flood.py --binary target/release/sixpn

It starts `sixpn serve` itself (SQLite in a temporary data dir, API and DNS on free ports of
127.0.0.1, the default [dns] caps unless --config names a TOML file), then:

1. --workers processes (fork) open --connections DNS TCP connections in all, from --sources
   addresses 127.0.1.1, 127.0.1.2, ... (loopback only: Linux answers the whole 127/8 on `lo`).
   Each connection sends one query (`internal. SOA`) every --interval seconds, as issue 22's
   attacker did. A connection the server closes or resets is opened again, at most --rate new
   connections a second in all, so the flood keeps pressing for the whole run.
2. Meanwhile the main process times `GET /healthz` and an admin `GET /api/v1/orgs`, each on a new
   connection, every --probe-every seconds, with a --probe-timeout (a probe that fails or times
   out counts as that long).
3. After --duration seconds it prints what the flood held and how the API fared, and exits 1 when
   a probe took 1 s or more (the issue's bound), 0 otherwise.

Bounded: --connections (default 20,000), --rate, --duration (default 60 s); everything stops and
the server is killed at the end. The script raises its own RLIMIT_NOFILE (soft to hard); each
worker holds --connections / --workers sockets, so the hard limit need only exceed that share.
The server inherits the same limits (`sixpn serve` raises its soft limit to the hard one too).

Only the Python 3 standard library is used.
"""
import argparse
import heapq
import json
import multiprocessing
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ADMIN_TOKEN = "bench-admin-token-" + "x" * 32


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query_frame(qid):
    """`internal. SOA IN`, RD clear, with the two-byte length prefix of DNS over TCP."""
    header = struct.pack(">HHHHHH", qid & 0xFFFF, 0, 1, 0, 0, 0)
    question = b"\x08internal\x00" + struct.pack(">HH", 6, 1)
    body = header + question
    return struct.pack(">H", len(body)) + body


def worker(index, sources, target, dns, interval, rate, end, out):
    """Holds `target` connections from `sources` until `end`; puts its counts on `out` every second."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    conns = {}  # fd -> [sock, source, connected, buffered bytes, answered]
    due = []  # heap of (time of next query, fd, generation)
    gen = {}
    counts = dict(opened=0, connect_failed=0, closed_by_server=0, answers=0, queries=0, bind_failed=0)
    frame = query_frame(index)
    next_source = 0
    budget, last_refill = 0.0, time.monotonic()
    last_report = 0.0

    def close(fd):
        sock = conns.pop(fd)[0]
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        gen.pop(fd, None)

    while True:
        now = time.monotonic()
        if now >= end:
            break
        budget = min(rate, budget + (now - last_refill) * rate)
        last_refill = now
        while len(conns) < target and budget >= 1:
            budget -= 1
            src = sources[next_source % len(sources)]
            next_source += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.bind((src, 0))
            except OSError:
                counts["bind_failed"] += 1
                sock.close()
                continue
            err = sock.connect_ex(dns)
            if err not in (0, 115):  # EINPROGRESS
                counts["connect_failed"] += 1
                sock.close()
                continue
            fd = sock.fileno()
            conns[fd] = [sock, src, False, b"", False]
            sel.register(sock, selectors.EVENT_WRITE, fd)
        # Queries that are due.
        while due and due[0][0] <= now:
            _, fd, g = heapq.heappop(due)
            if gen.get(fd) != g or fd not in conns:
                continue
            try:
                conns[fd][0].send(frame)
                counts["queries"] += 1
            except BlockingIOError:
                pass
            except OSError:
                counts["closed_by_server"] += 1
                close(fd)
                continue
            heapq.heappush(due, (now + interval, fd, g))
        timeout = 0.05
        if due:
            timeout = max(0.0, min(timeout, due[0][0] - now))
        for key, events in sel.select(timeout):
            fd = key.data
            if fd not in conns:
                continue
            entry = conns[fd]
            sock = entry[0]
            if not entry[2]:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err != 0:
                    counts["connect_failed"] += 1
                    close(fd)
                    continue
                entry[2] = True
                counts["opened"] += 1
                sel.modify(sock, selectors.EVENT_READ, fd)
                g = gen[fd] = gen.get(fd, 0) + 1
                heapq.heappush(due, (time.monotonic(), fd, g))
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                counts["closed_by_server"] += 1
                close(fd)
                continue
            buf = entry[3] + data
            while len(buf) >= 2:
                n = struct.unpack(">H", buf[:2])[0]
                if len(buf) < 2 + n:
                    break
                buf = buf[2 + n:]
                counts["answers"] += 1
                entry[4] = True
            entry[3] = buf
        if now - last_report >= 1.0:
            last_report = now
            held = sum(1 for c in conns.values() if c[2])
            served = sum(1 for c in conns.values() if c[4])
            out.put((index, dict(counts, held=held, served=served)))
    held = sum(1 for c in conns.values() if c[2])
    served = sum(1 for c in conns.values() if c[4])
    out.put((index, dict(counts, held=held, served=served, done=True)))
    for fd in list(conns):
        close(fd)


def probe(url, token=None, timeout=5.0):
    """Seconds one GET on a new connection took (`timeout` when it failed), and an error or None."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            res.read()
            if res.status != 200:
                return timeout, f"status {res.status}"
        return time.monotonic() - start, None
    except (urllib.error.URLError, OSError) as e:
        return max(timeout, time.monotonic() - start), str(e)


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def scrape(base, names):
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as res:
            text = res.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        for name in names:
            if line.startswith(name):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/sixpn")
    ap.add_argument("--config", help="a sixpn.toml to start the server with (default: none, the defaults)")
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--sources", type=int, default=20, help="127.0.1.1 .. 127.0.1.N")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between a connection's queries")
    ap.add_argument("--rate", type=float, default=4000.0, help="new connections a second, in all")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--probe-every", type=float, default=0.25)
    ap.add_argument("--probe-timeout", type=float, default=5.0)
    ap.add_argument("--label", default="", help="a name for this run in the output")
    ap.add_argument("--json", help="write the summary here too")
    args = ap.parse_args()

    soft, hard = raise_nofile()
    per_worker = -(-args.connections // args.workers)
    if per_worker + 64 > hard:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below {per_worker} sockets per worker: use more --workers")

    data = tempfile.mkdtemp(prefix="sixpn-dns-tcp-flood-")
    api_port, dns_port = free_port(), free_port()
    env = dict(os.environ)
    for key in ("SIXPN_DATABASE_URL", "SIXPN_CONFIG"):
        env.pop(key, None)
    env.update(
        SIXPN_DATA_DIR=data,
        SIXPN_API_LISTEN=f"127.0.0.1:{api_port}",
        SIXPN_DNS_LISTEN=f"127.0.0.1:{dns_port}",
        SIXPN_ADMIN_TOKEN=ADMIN_TOKEN,
        RUST_LOG="warn",
    )
    cmd = [args.binary, "serve"]
    if args.config:
        cmd += ["--config", args.config]
    log_path = os.path.join(data, "server.log")
    log = open(log_path, "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            sys.exit(f"the server exited ({server.returncode}); see {log_path}")
        if probe(base + "/healthz", timeout=1)[1] is None:
            break
        if time.monotonic() > deadline:
            server.kill()
            sys.exit("the server did not answer /healthz within 30 s")
        time.sleep(0.1)

    try:
        idle = [probe(base + "/healthz")[0] for _ in range(20)]
        sources = [f"127.0.1.{i}" for i in range(1, args.sources + 1)]
        out = multiprocessing.get_context("fork").Queue()
        end = time.monotonic() + args.duration
        procs = []
        for w in range(args.workers):
            mine = sources[w::args.workers] or sources
            target = min(per_worker, args.connections - w * per_worker)
            p = multiprocessing.get_context("fork").Process(
                target=worker,
                args=(w, mine, max(0, target), ("127.0.0.1", dns_port), args.interval,
                      args.rate / args.workers, end, out),
                daemon=True,
            )
            p.start()
            procs.append(p)

        health, admin, errors = [], [], []
        latest = {}
        peak_held = peak_served = peak_server_open = 0
        timeline = []
        next_line = time.monotonic() + 5
        while time.monotonic() < end:
            t0 = time.monotonic()
            h, he = probe(base + "/healthz", timeout=args.probe_timeout)
            a, ae = probe(base + "/api/v1/orgs", token=ADMIN_TOKEN, timeout=args.probe_timeout)
            health.append(h)
            admin.append(a)
            for what, e in (("/healthz", he), ("GET /api/v1/orgs", ae)):
                if e:
                    errors.append(f"{time.monotonic() - (end - args.duration):.1f}s {what}: {e}")
            while not out.empty():
                i, c = out.get_nowait()
                latest[i] = c
            held = sum(c["held"] for c in latest.values())
            served = sum(c.get("served", 0) for c in latest.values())
            peak_held = max(peak_held, held)
            peak_served = max(peak_served, served)
            if time.monotonic() >= next_line:
                next_line += 5
                open_now = scrape(base, ["sixpn_dns_tcp_connections"]).get("sixpn_dns_tcp_connections")
                peak_server_open = max(peak_server_open, open_now or 0)
                line = dict(t=round(time.monotonic() - (end - args.duration)), client_connected=held,
                            client_answered=served, server_open=open_now,
                            healthz_max=round(max(health[-20:]), 3), admin_max=round(max(admin[-20:]), 3))
                timeline.append(line)
                print(json.dumps(line), flush=True)
            time.sleep(max(0.0, args.probe_every - (time.monotonic() - t0)))
        for p in procs:
            p.join(timeout=30)
        while not out.empty():
            i, c = out.get_nowait()
            latest[i] = c
        totals = {}
        for c in latest.values():
            for k, v in c.items():
                if k != "done":
                    totals[k] = totals.get(k, 0) + v
        metrics = scrape(base, ["sixpn_dns_tcp_"])
        server_alive = server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    with open(log_path) as f:
        server_log = f.read()
    emfile = server_log.count("Too many open files") + server_log.count("out of descriptors")
    shutil.rmtree(data, ignore_errors=True)

    summary = dict(
        label=args.label,
        binary=args.binary,
        connections=args.connections,
        sources=args.sources,
        duration_s=args.duration,
        nofile=[soft, hard],
        peak_client_connected=peak_held,
        peak_client_answered=peak_served,
        peak_server_open=peak_server_open,
        flood=totals,
        healthz_idle_p50_ms=round(percentile(idle, 50) * 1000, 2),
        healthz_p50_ms=round(percentile(health, 50) * 1000, 2),
        healthz_p99_ms=round(percentile(health, 99) * 1000, 2),
        healthz_max_ms=round(max(health) * 1000, 2),
        admin_p50_ms=round(percentile(admin, 50) * 1000, 2),
        admin_p99_ms=round(percentile(admin, 99) * 1000, 2),
        admin_max_ms=round(max(admin) * 1000, 2),
        probes=len(health),
        probes_over_1s=sum(1 for x in health + admin if x >= 1.0),
        probe_errors=errors[:10],
        server_alive=server_alive,
        server_log_emfile_lines=emfile,
        metrics=metrics,
    )
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    ok = summary["probes_over_1s"] == 0
    print(("PASS" if ok else "FAIL") + f": slowest /healthz {summary['healthz_max_ms']} ms, "
          f"admin GET {summary['admin_max_ms']} ms, {summary['probes_over_1s']} probes at 1 s or more; "
          f"the flood held {peak_served} answered connections at most")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
