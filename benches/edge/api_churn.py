#!/usr/bin/env python3
"""API connection churn (issue 22, point 4): can a slow real client get through?

Starts a `sixpn serve` (release build by default) on a temporary data directory, or uses a
running one (--url). Meanwhile:

- the churn opens --rate silent connections a second (default 3,000) from --sources source
  addresses (default 512: 127.0.1.1, 127.0.1.2, ...; loopback accepts all of 127/8) and sends
  nothing. It holds each until the server closes it (refused, evicted, or cut off by the
  header-read timeout), or at most --hold seconds (default 30; closing with a reset). A short
  --hold (say 2.9, just under the server's 3 s eviction floor) is the attacker that closes
  and reopens its connections before they can be evicted;
- a real client, from 127.0.0.1, --rounds times (default 10): connects, waits --delay seconds
  (default 1), then sends `GET /healthz`; then the same with an authenticated admin
  `GET /api/v1/orgs`. It reports how many got a 200 (the target is all of them) and what the
  others got.

Before issue 22 a new connection at the cap evicted the one idle longest, silent or not: every
slow client was cut off (0 of 10). Loopback only, python3 standard library only, bounded in
time (--max-seconds, default 90).

    python3 benches/edge/api_churn.py                       # builds nothing: run
                                                            # `cargo build --release` first
    python3 benches/edge/api_churn.py --bin target/debug/sixpn
    python3 benches/edge/api_churn.py --url http://127.0.0.1:4280 --admin-token ...
"""

import argparse
import collections
import os
import resource
import secrets
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def start_server(binary, admin_token):
    data = tempfile.mkdtemp(prefix="sixpn-churn-")
    port = free_port()
    env = dict(os.environ)
    for key in ("SIXPN_DATABASE_URL", "SIXPN_CONFIG"):
        env.pop(key, None)
    env.update(
        SIXPN_DATA_DIR=data,
        SIXPN_API_LISTEN=f"127.0.0.1:{port}",
        SIXPN_DNS_LISTEN=f"127.0.0.1:{free_port()}",
        SIXPN_ADMIN_TOKEN=admin_token,
        RUST_LOG=env.get("RUST_LOG", "warn"),
    )
    proc = subprocess.Popen(
        [binary, "serve"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"sixpn serve exited early ({proc.returncode})")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return proc, url, data
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("sixpn serve did not answer /healthz within 30 s")


def sources(n):
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]


class Churn(threading.Thread):
    """Opens `rate` silent connections a second round-robin from `srcs`, each reset after
    `hold` seconds."""

    def __init__(self, addr, srcs, rate, hold):
        super().__init__(daemon=True)
        self.addr, self.srcs, self.rate, self.hold = addr, srcs, rate, hold
        self.stop = threading.Event()
        self.opened = 0
        self.failed = 0
        self.closed_by_server = 0
        self.started = self.stopped = None

    def run(self):
        held = collections.deque()
        watch = selectors.DefaultSelector()
        linger = struct.pack("ii", 1, 0)
        start = self.started = time.monotonic()
        i = 0
        while not self.stop.is_set():
            # Whatever the server closed (refused, evicted, timed out) is closed here too.
            for key, _ in watch.select(0):
                watch.unregister(key.fileobj)
                key.fileobj.close()
                self.closed_by_server += 1
            now = time.monotonic()
            while held and held[0][0] <= now:
                _, s = held.popleft()
                if s.fileno() >= 0:
                    watch.unregister(s)
                    s.close()
            due = int((now - start) * self.rate)
            if self.opened + self.failed >= due:
                time.sleep(0.001)
                continue
            for _ in range(min(due - self.opened - self.failed, 200)):
                s = socket.socket()
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    s.setblocking(False)
                    s.bind((self.srcs[i % len(self.srcs)], 0))
                    s.connect_ex(self.addr)
                    watch.register(s, selectors.EVENT_READ)
                    held.append((now + self.hold, s))
                    self.opened += 1
                except OSError:
                    # Out of descriptors, most likely: what the server holds plus what it has
                    # not closed yet.
                    s.close()
                    self.failed += 1
                i += 1
        self.stopped = time.monotonic()
        for _, s in held:
            s.close()
        watch.close()


def slow_request(addr, delay, request):
    """Connects from 127.0.0.1, waits `delay`, sends `request`; the status, or what happened."""
    try:
        s = socket.create_connection(addr, timeout=5, source_address=("127.0.0.1", 0))
    except OSError as e:
        return f"connect failed ({e.__class__.__name__})"
    with s:
        time.sleep(delay)
        try:
            s.sendall(request)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            return "no answer within 5 s"
        except OSError as e:
            return f"cut off ({e.__class__.__name__})"
    if not data:
        return "cut off (closed)"
    try:
        status = int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return f"garbage {data[:40]!r}"
    marker = b'"error":"'
    if status != 200 and marker in data:
        why = data.split(marker, 1)[1].split(b'"')[0].decode(errors="replace")
        return f"{status} {why}"
    return status


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/sixpn"))
    p.add_argument("--url", help="use this running server instead of starting one")
    p.add_argument("--admin-token", default=os.environ.get("SIXPN_ADMIN_TOKEN"))
    p.add_argument("--rate", type=float, default=3000.0)
    p.add_argument("--sources", type=int, default=512)
    p.add_argument("--hold", type=float, default=30.0)
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument(
        "--warmup",
        type=float,
        default=12.0,
        help="churn alone first, seconds (past the server's 10 s header-read timeout, so "
        "that connections come and go when the real client comes)",
    )
    p.add_argument("--max-seconds", type=float, default=90.0)
    args = p.parse_args()

    raise_nofile()
    proc = data = None
    if args.url:
        url = args.url.rstrip("/")
        token = args.admin_token or sys.exit("--admin-token (or SIXPN_ADMIN_TOKEN) is needed")
    else:
        if not os.path.exists(args.bin):
            sys.exit(f"{args.bin} missing: cargo build --release (or pass --bin)")
        token = secrets.token_hex(24)
        proc, url, data = start_server(args.bin, token)
    host, port = url.split("://", 1)[1].split("/")[0].rsplit(":", 1)
    addr = (host, int(port))

    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    admin = (
        f"GET /api/v1/orgs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    churn = Churn(addr, sources(args.sources), args.rate, args.hold)
    results = {"healthz": [], "admin": []}
    started = time.monotonic()
    try:
        churn.start()
        time.sleep(args.warmup)
        for _ in range(args.rounds):
            if time.monotonic() - started > args.max_seconds:
                break
            results["healthz"].append(slow_request(addr, args.delay, healthz))
            results["admin"].append(slow_request(addr, args.delay, admin))
    finally:
        churn.stop.set()
        churn.join(10)
        if proc is not None:
            alive = proc.poll() is None
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(data, ignore_errors=True)
            if not alive:
                print("the server died during the run", file=sys.stderr)

    elapsed = (churn.stopped or time.monotonic()) - (churn.started or started)
    rate = churn.opened / elapsed if elapsed else 0.0
    print(
        f"churn: {churn.opened} silent connections in {elapsed:.1f} s "
        f"({rate:.0f}/s, target {args.rate:.0f}) from {args.sources} addresses, "
        f"held up to {args.hold:g} s ({churn.closed_by_server} closed by the server meanwhile); "
        f"{churn.failed} could not be opened"
    )
    ok_all = True
    for name, got in results.items():
        ok = sum(1 for g in got if g == 200)
        others = collections.Counter(str(g) for g in got if g != 200)
        ok_all &= ok == len(got) == args.rounds
        extra = f"; others: {dict(others)}" if others else ""
        print(
            f"{name}: {ok}/{len(got)} got 200 "
            f"(request sent {args.delay:g} s after connecting){extra}"
        )
    sys.exit(0 if ok_all else 1)


if __name__ == "__main__":
    main()
