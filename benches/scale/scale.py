#!/usr/bin/env python3
"""scale.py - the control-plane scale benchmark of issue 9 (point 8): what a peer write costs as one org grows.

Run with:  python3 benches/scale/scale.py --sizes 1000,10000,100000 --million --json target/scale/results.json

It starts a release `sixpn serve` itself (SQLite, a temporary data dir, free ports on 127.0.0.1),
then, through the real API (POST /api/v3/wire_guard_peers) and the real DNS socket (UDP):

1. grows one org (`personal`) to each size in --sizes with --concurrency keep-alive clients, and
   at each size measures
     seq p50/p99   latency of --probe sequential creates (one client)
     burst/s       creates per second for --burst creates at --concurrency clients
     fresh p50/p99 time from sending a create to its name answering AAAA over UDP (from 127.0.0.1,
                   which the default config maps to org `personal`); the API promises the name is in
                   DNS before its 200, so a name that does not answer right after its 200 is a
                   violation (checked on every sequential probe and on every --growth-check-every'th
                   create made while growing at full concurrency)
     token delete  a second token's --delete-sample peers must be NXDOMAIN right after the delete's 200
     RSS           the server's VmRSS (/proc/PID/status)
2. with --million (or --seed-size N): stops the server, seeds the store directly up to N live peers
   in one SQLite transaction (only `peers` rows are inserted; `orgs.next_host` and
   `meta.generation` are bumped to match; extra tables such as a change log are left alone), starts
   the server again and times startup (process start until /healthz and a seeded name both answer:
   the load of the store plus the first snapshot build), then measures create p50/p99 through the
   API and the RSS per peer ((RSS at N) - (RSS of the empty server at the start)) / N.
3. prints Markdown tables, the last one with the ratios that issue 9's acceptance asks for.

Only the Python 3 standard library is used. Keys are 32 random bytes with the top bit clear: the
server rejects only the handful of low-order Curve25519 points (about 2^-250 of all values), so a
random key is valid; a 422 would stop the run with the server's message.
"""
import argparse
import base64
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ORG = "personal"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.1 keep-alive client (faster than http.client, so the client is not what limits
# a burst on a small machine).

class Http:
    def __init__(self, host, port, timeout=300.0):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock = None
        self.buf = b""

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _connect(self):
        self.sock = socket.create_connection(self.addr, timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _read_until(self, sep):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + len(sep):]
                return out
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk

    def _read_n(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def request(self, method, path, token=None, body=None):
        """Returns (status, body bytes). Retries once on a fresh connection if the kept-alive one died."""
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.addr[0]}:{self.addr[1]}\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n\r\n"
        msg = head.encode() + data
        for attempt in range(2):
            fresh = self.sock is None
            try:
                if fresh:
                    self._connect()
                self.sock.sendall(msg)
                return self._response()
            except (ConnectionError, OSError):
                self.close()
                if fresh or attempt:
                    raise
        raise ConnectionError("unreachable")

    def _response(self):
        lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
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
        return status, body


# ---------------------------------------------------------------------------------------------
# DNS over UDP: one AAAA question, the rcode and the first AAAA address of the answer.

class Dns:
    def __init__(self, port, host="127.0.0.1", timeout=2.0):
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))  # source 127.0.0.1: the view of org `personal`
        self.sock.settimeout(timeout)
        self.qid = int.from_bytes(os.urandom(2), "big")

    def aaaa(self, fqdn):
        """Returns (rcode, address or None); rcode -1 on timeout."""
        self.qid = (self.qid + 1) & 0xFFFF
        qname = b"".join(bytes([len(l)]) + l.encode() for l in fqdn.rstrip(".").split(".")) + b"\0"
        q = struct.pack(">HHHHHH", self.qid, 0, 1, 0, 0, 0) + qname + struct.pack(">HH", 28, 1)
        self.sock.sendto(q, self.addr)
        deadline = time.monotonic() + self.sock.gettimeout()
        while True:
            try:
                r, _ = self.sock.recvfrom(4096)
            except socket.timeout:
                return -1, None
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == self.qid:
                break
            if time.monotonic() > deadline:
                return -1, None
        rcode = r[3] & 0xF
        qd, an = struct.unpack(">HH", r[4:8])
        off = 12
        for _ in range(qd):
            off = _skip_name(r, off) + 4
        for _ in range(an):
            off = _skip_name(r, off)
            rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", r[off:off + 10])
            off += 10
            if rtype == 28 and rdlen == 16:
                return rcode, str(ipaddress.IPv6Address(r[off:off + 16]))
            off += rdlen
        return rcode, None


def _skip_name(msg, off):
    while True:
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def peer_fqdn(name):
    return f"{name}._peer.internal"


# ---------------------------------------------------------------------------------------------
# The server under test.

def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 (DNS listens on both)."""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    sys.exit("no free port on 127.0.0.1")


class Server:
    def __init__(self, binary, data_dir, admin_token, rust_log):
        self.binary = binary
        self.data_dir = data_dir
        self.admin_token = admin_token
        self.rust_log = rust_log
        self.api_port = free_port()
        self.dns_port = free_port()
        while self.dns_port == self.api_port:
            self.dns_port = free_port()
        self.proc = None
        self.log_path = os.path.join(os.path.dirname(data_dir), "server.log")
        self.starts = 0

    def start(self, probe_name=None, probe_address=None, timeout=900.0):
        """Starts the server; returns seconds until /healthz answers 200 and, when given, until
        `probe_name` answers AAAA `probe_address` over UDP (both: the later of the two)."""
        env = dict(os.environ)
        env.update({
            "SIXPN_DATA_DIR": self.data_dir,
            "SIXPN_ADMIN_TOKEN": self.admin_token,
            "SIXPN_API_LISTEN": f"127.0.0.1:{self.api_port}",
            "SIXPN_DNS_LISTEN": f"127.0.0.1:{self.dns_port}",
            "RUST_LOG": self.rust_log,
        })
        env.pop("SIXPN_DATABASE_URL", None)  # SQLite in the data dir, always
        self.starts += 1
        logf = open(self.log_path, "ab")
        logf.write(f"--- start {self.starts} ---\n".encode())
        logf.flush()
        cwd = os.path.dirname(self.data_dir)  # no ./zones there: the built-in internal.zone
        # The benchmark drives one token as hard as it can: lift the per-token rate limit (on by
        # default) so it measures the control plane, not the limiter.
        config = os.path.join(cwd, "bench.toml")
        with open(config, "w") as f:
            f.write("[api]\ntoken_rate = 1000000.0\ntoken_burst = 1000000\n"
                    # The org holds every peer of the run: lift the 100,000 default of
                    # `[orgs] max_peers` (issue 23) far above any scale measured.
                    "[orgs]\nmax_peers = 1000000000\n")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([self.binary, "serve", "--config", config], env=env, cwd=cwd,
                                     stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        api_at = dns_at = None
        dns = Dns(self.dns_port, timeout=0.05)
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                sys.exit(f"sixpn serve exited with {self.proc.returncode}; see {self.log_path}")
            if api_at is None:
                try:
                    c = Http("127.0.0.1", self.api_port, timeout=2)
                    st, _ = c.request("GET", "/healthz")
                    c.close()
                    if st == 200:
                        api_at = time.perf_counter() - t0
                except OSError:
                    pass
            if dns_at is None:
                try:
                    rc, addr = dns.aaaa(peer_fqdn(probe_name or "nonexistent-probe"))
                except OSError:
                    rc, addr = -1, None
                if probe_name is None:
                    if rc >= 0:
                        dns_at = time.perf_counter() - t0
                else:
                    if rc == 0 and addr == probe_address:
                        dns_at = time.perf_counter() - t0
            if api_at is not None and dns_at is not None:
                return {"startup_s": max(api_at, dns_at), "api_s": api_at, "dns_s": dns_at}
            time.sleep(0.01)
        sys.exit(f"sixpn serve did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log("the server did not stop within 120 s of SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rss_mb(self):
        return self._status_kb("VmRSS") / 1024

    def hwm_mb(self):
        return self._status_kb("VmHWM") / 1024

    def _status_kb(self, key):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return float("nan")

    def cpu_s(self):
        """User + system CPU seconds of the server so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# The workload.

def server_warnings(log_path):
    """WARN/ERROR lines of the server log, grouped by message (fields like generation=7 dropped)."""
    import re
    counts = {}
    try:
        text = open(log_path, errors="replace").read()
    except OSError:
        return counts
    for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
        m = re.search(r"\b(WARN|ERROR)\b\s+(\S+?):\s+(.*)", line)
        if m:
            msg = re.sub(r"\s+[\w.]+=\S+", "", m.group(3)).strip()
            key = f"{m.group(1)} {m.group(2)}: {msg}"
            if len(key) > 160:
                key = key[:157] + "..."
            counts[key] = counts.get(key, 0) + 1
    return counts


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * p))]


def new_pubkey():
    k = bytearray(os.urandom(32))
    k[31] &= 0x7F
    return base64.b64encode(bytes(k)).decode()


class Bench:
    def __init__(self, a, server):
        self.a = a
        self.s = server
        self.lock = threading.Lock()
        self.next_index = 0          # names p0, p1, ... of the main token
        self.live = 0                # live peers in the org (main token + seeded)
        self.violations = 0          # freshness + delete violations, whole run
        self.checked = 0             # names checked for freshness/NXDOMAIN, whole run
        self.dns_timeouts = 0        # DNS queries that got no answer in time (asked again)
        self.clients = []
        self.main_token = None
        self.main_token_name = None

    def connect(self):
        for c in self.clients:
            c[0].close()
        self.clients = [(Http("127.0.0.1", self.s.api_port), Dns(self.s.dns_port))
                        for _ in range(self.a.concurrency)]

    def admin(self, method, path, body=None):
        c = Http("127.0.0.1", self.s.api_port)
        try:
            st, data = c.request(method, path, self.s.admin_token, body)
        finally:
            c.close()
        if st // 100 != 2:
            sys.exit(f"admin {method} {path}: HTTP {st} {data[:300]!r}")
        return json.loads(data) if data else None

    def mint(self, name):
        return self.admin("POST", f"/api/v1/orgs/{ORG}/wireguard_tokens", {"name": name})["token"]

    def create(self, client, token, name, group):
        """One create; returns (t_send, t_200, address)."""
        body = {"name": name, "group": group, "pubkey": new_pubkey()}
        t = time.perf_counter()
        st, data = client.request("POST", "/api/v3/wire_guard_peers", token, body)
        t2 = time.perf_counter()
        if st != 200:
            raise SystemExit(f"create {name}: HTTP {st} {data[:300]!r}")
        return t, t2, json.loads(data)["us"]

    def take(self, n=1):
        with self.lock:
            i = self.next_index
            self.next_index += n
            self.live += n
        return i

    def main_create(self, client):
        i = self.take()
        name = f"p{i}"
        t, t2, addr = self.create(client, self.main_token, name, f"g{i % self.a.groups}")
        return name, t, t2, addr

    def ask(self, dns, fq):
        """One AAAA query, asked again (up to 5 times) when no answer comes within the timeout."""
        rc, got = dns.aaaa(fq)
        tries = 1
        while rc < 0 and tries < 5:
            log(f"  DNS gave no answer for {fq} within {dns.sock.gettimeout()} s; asking again")
            self.dns_timeouts += 1
            rc, got = dns.aaaa(fq)
            tries += 1
        return rc, got

    def fresh_check(self, dns, name, addr, t_send):
        """Right after a 200: does the name answer? Returns (violation, freshness seconds).

        A violation is a definite wrong answer (NXDOMAIN, no AAAA, another address) to the first
        query after the 200. A query that gets no answer within the DNS timeout is not a
        violation but is asked again (and logged: a DNS server too busy to answer is worth
        knowing too)."""
        fq = peer_fqdn(name)
        rc, got = self.ask(dns, fq)
        if rc == 0 and got == addr:
            return False, time.perf_counter() - t_send
        first = (rc, got)
        deadline = time.perf_counter() + 10
        late = float("inf")
        while time.perf_counter() < deadline:
            time.sleep(0.001)
            rc, got = dns.aaaa(fq)
            if rc == 0 and got == addr:
                late = time.perf_counter() - t_send
                break
        log(f"  VIOLATION: {fq} answered rcode {first[0]} address {first[1]} right after its 200 "
            f"(want {addr}); correct after {late * 1000:.1f} ms from the send")
        return True, late

    def parallel(self, total, fn, budget=None):
        """Runs fn(client_index) `total` times over the clients; returns (done, seconds)."""
        left = [total]
        stop_at = None if budget is None else time.perf_counter() + budget
        errors = []

        def worker(k):
            try:
                while True:
                    if stop_at is not None and time.perf_counter() > stop_at:
                        return
                    with self.lock:
                        if left[0] <= 0 or errors:
                            return
                        left[0] -= 1
                    fn(k)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(self.clients))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        dt = time.perf_counter() - t
        if errors:
            raise errors[0]
        return total - left[0], dt

    def grow_to(self, n):
        need = n - self.live
        if need <= 0:
            return {"grown": 0}
        every = self.a.growth_check_every
        stats = {"checked": 0, "violations": 0}
        done_count = [0]

        def one(k):
            http, dns = self.clients[k]
            name, t, _t2, addr = self.main_create(http)
            with self.lock:
                done_count[0] += 1
                check = every > 0 and done_count[0] % every == 0
            if check:
                bad, _ = self.fresh_check(dns, name, addr, t)
                with self.lock:
                    stats["checked"] += 1
                    stats["violations"] += bad

        log(f"growing {self.live} -> {n} peers ({self.a.concurrency} clients)")
        t = time.perf_counter()
        last = [t]

        def progress(k):
            one(k)
            if k == 0 and time.perf_counter() - last[0] > 30:
                last[0] = time.perf_counter()
                log(f"  ... {self.live} peers, {self.s.rss_mb():.0f} MB RSS")

        self.parallel(need, progress)
        dt = time.perf_counter() - t
        self.checked += stats["checked"]
        self.violations += stats["violations"]
        log(f"grown to {self.live} in {dt:.1f} s ({need / dt:.0f}/s); "
            f"{stats['violations']}/{stats['checked']} sampled names late in DNS")
        return {"grown": need, "grow_s": dt, "grow_checked": stats["checked"],
                "grow_violations": stats["violations"]}

    def sequential(self, count):
        http, dns = self.clients[0]
        lat, fresh, bad = [], [], 0
        stop_at = time.perf_counter() + self.a.time_budget
        for _ in range(count):
            if len(lat) >= 5 and time.perf_counter() > stop_at:
                log(f"  sequential probes stopped by --time-budget after {len(lat)}")
                break
            name, t, t2, addr = self.main_create(http)
            lat.append((t2 - t) * 1000)
            v, f = self.fresh_check(dns, name, addr, t)
            bad += v
            fresh.append(f * 1000)
        lat.sort()
        fresh.sort()
        self.checked += len(lat)
        self.violations += bad
        return {"seq_n": len(lat), "seq_p50_ms": statistics.median(lat), "seq_p99_ms": pct(lat, 0.99),
                "fresh_p50_ms": statistics.median(fresh), "fresh_p99_ms": pct(fresh, 0.99),
                "fresh_violations": bad}

    def burst(self, count):
        def one(k):
            self.main_create(self.clients[k][0])
        cpu0 = self.s.cpu_s()
        done_before = self.next_index
        _, dt = self.parallel(count, one, budget=self.a.time_budget)
        done = self.next_index - done_before
        cpu = self.s.cpu_s() - cpu0
        return {"burst_n": done, "burst_per_s": done / dt, "burst_cpu_ms_per_create": cpu * 1000 / max(done, 1)}

    def client_ceiling(self, count=2000):
        """GET /healthz at full concurrency: about the most requests/s this client can make here,
        so a burst figure near it is limited by the client, not the server."""
        def one(k):
            st, _ = self.clients[k][0].request("GET", "/healthz")
            if st != 200:
                raise SystemExit(f"GET /healthz: HTTP {st}")
        done, dt = self.parallel(count, one)
        return done / dt

    def token_delete(self, tag):
        """A second token's peers must be NXDOMAIN right after the token delete's 200."""
        n = self.a.delete_sample
        if n <= 0:
            return {}
        name = f"del-{tag}-{os.urandom(3).hex()}"
        token = self.mint(name)
        http, dns = self.clients[0]
        peers = []
        for j in range(n):
            pname = f"{name}-{j}"
            t, _t2, addr = self.create(http, token, pname, "deleted")
            v, _ = self.fresh_check(dns, pname, addr, t)
            self.violations += v
            self.checked += 1
            peers.append(pname)
        t = time.perf_counter()
        ans = self.admin("DELETE", f"/api/v1/orgs/{ORG}/wireguard_tokens/{name}")
        dt = time.perf_counter() - t
        bad = 0
        for pname in peers:
            rc, got = self.ask(dns, peer_fqdn(pname))
            if rc != 3:
                log(f"  VIOLATION: {pname} of deleted token {name} answered rcode {rc} address {got}, not NXDOMAIN")
                bad += 1
        if ans.get("deleted_peers") != n:
            log(f"  token delete said {ans.get('deleted_peers')} peers deleted, expected {n}")
            bad += 1
        self.checked += n
        self.violations += bad
        return {"token_delete_ms": dt * 1000, "delete_violations": bad}

    def measure(self, size):
        r = {"target": size, "peers": self.live}
        log(f"measuring at {self.live} peers: {self.a.probe} sequential creates")
        r.update(self.sequential(self.a.probe))
        log(f"  p50 {r['seq_p50_ms']:.2f} ms, p99 {r['seq_p99_ms']:.2f} ms; burst of {self.a.burst}")
        r.update(self.burst(self.a.burst))
        log(f"  {r['burst_per_s']:.0f} creates/s; token delete")
        r.update(self.token_delete(size))
        r["rss_mb"] = self.s.rss_mb()
        r["peers_after"] = self.live
        log(f"  RSS {r['rss_mb']:.0f} MB, {self.live} peers")
        return r


# ---------------------------------------------------------------------------------------------
# Seeding the store directly (the server is stopped).

def seed(db_path, target_live, token_name):
    """Inserts peers for the live token `token_name` of org `personal` until the org has
    `target_live` live peers, in one transaction. Returns (inserted, seconds, last name, last address)."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        cols = {t: {r[1]: r for r in db.execute(f"PRAGMA table_info({t})")}
                for t in ("meta", "orgs", "tokens", "peers")}
        need = {"meta": {"id", "generation"}, "orgs": {"id", "slug", "prefix", "next_host"},
                "tokens": {"id", "org_id", "name", "deleted_at"},
                "peers": {"org_id", "token_id", "name", "group_name", "region", "pubkey", "address",
                          "created_at", "updated_at"}}
        for t, names in need.items():
            missing = names - cols[t].keys()
            if missing:
                sys.exit(f"seed: table {t} has no column(s) {sorted(missing)}; update benches/scale/scale.py")
        # Any other peers column must be fillable by its default (a NOT NULL one without default would fail).
        for name, (_cid, _n, _type, notnull, default, pk) in cols["peers"].items():
            if name not in need["peers"] and notnull and default is None and not pk:
                sys.exit(f"seed: peers.{name} is NOT NULL without a default; update benches/scale/scale.py")

        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")  # 256 MB while building the indexes
        db.execute("BEGIN IMMEDIATE")
        org_id, prefix, next_host = db.execute(
            "SELECT id, prefix, next_host FROM orgs WHERE slug = ?", (ORG,)).fetchone()
        (token_id,) = db.execute(
            "SELECT id FROM tokens WHERE org_id = ? AND name = ? AND deleted_at IS NULL",
            (org_id, token_name)).fetchone()
        (live,) = db.execute("SELECT COUNT(*) FROM peers WHERE org_id = ?", (org_id,)).fetchone()
        row = db.execute("SELECT region FROM peers WHERE token_id = ? LIMIT 1", (token_id,)).fetchone()
        region = row[0] if row else "local"
        k = target_live - live
        if k <= 0:
            db.execute("ROLLBACK")
            return 0, 0.0, None, None
        net = int(ipaddress.IPv6Network(prefix).network_address)
        now = int(time.time())
        keys = os.urandom(32 * k)
        first = next_host
        t = time.perf_counter()

        def rows():
            for j in range(k):
                kb = bytearray(keys[32 * j:32 * j + 32])
                kb[31] &= 0x7F
                host = first + j
                # The server's peer_address: the org's /48 | 1 << 64 | host number.
                addr = str(ipaddress.IPv6Address(net | (1 << 64) | host))
                yield (org_id, token_id, f"m{j}", f"g{j % SEED_GROUPS}", region,
                       base64.b64encode(bytes(kb)).decode(), addr, now, now)

        db.executemany(
            "INSERT INTO peers (org_id, token_id, name, group_name, region, pubkey, address, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
        db.execute("UPDATE orgs SET next_host = next_host + ? WHERE id = ?", (k, org_id))
        db.execute("UPDATE meta SET generation = generation + 1 WHERE id = 1")
        db.execute("COMMIT")
        dt = time.perf_counter() - t
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        last = k - 1
        return k, dt, f"m{last}", str(ipaddress.IPv6Address(net | (1 << 64) | (first + last)))
    finally:
        db.close()


SEED_GROUPS = 500


# ---------------------------------------------------------------------------------------------
# Report.

def fmt(v, spec=".2f"):
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def report(a, results, million, empty, cmdline):
    sizes = results["sizes"]
    out = []
    out.append(f"Run with: {cmdline}\n")
    out.append(f"sixpn scale benchmark: SQLite, one org ({ORG}), {a.groups} groups, "
               f"{a.concurrency} clients, {a.probe} sequential probes, bursts of {a.burst}; "
               f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
               f"load average {os.getloadavg()[0]:.1f}\n")
    out.append(f"Empty server: startup {empty['startup_s']:.2f} s, RSS {empty['rss_mb']:.1f} MB. "
               f"Client ceiling (GET /healthz, {a.concurrency} clients): "
               f"{results.get('client_ceiling_per_s', float('nan')):.0f} requests/s\n")
    out.append("| peers | seq create p50 | p99 | burst creates/s | server CPU/create | fresh p50 | fresh p99 "
               "| late names (seq+growth sample) | token delete | NXDOMAIN violations | RSS |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sizes:
        late = r["fresh_violations"] + r.get("grow_violations", 0)
        checked = r["seq_n"] + r.get("grow_checked", 0)
        out.append(
            f"| {r['peers']:,} | {fmt(r['seq_p50_ms'])} ms | {fmt(r['seq_p99_ms'])} ms | "
            f"{r['burst_per_s']:.0f} | {fmt(r['burst_cpu_ms_per_create'])} ms | {fmt(r['fresh_p50_ms'])} ms | "
            f"{fmt(r['fresh_p99_ms'])} ms | {late}/{checked} | {fmt(r.get('token_delete_ms'), '.1f')} ms | "
            f"{r.get('delete_violations', '-')}/{a.delete_sample} | {r['rss_mb']:.0f} MB |")
    if million:
        m = million
        out.append("")
        out.append(f"Seeded run: {m['peers']:,} peers ({m['seeded']:,} inserted in {m['seed_s']:.1f} s)\n")
        out.append("| peers | startup (API + DNS) | API up | DNS answers | create p50 | p99 | fresh p50 "
                   "| late names | RSS after start | RSS after creates | RSS per peer |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        out.append(
            f"| {m['peers']:,} | {m['startup_s']:.2f} s | {m['api_s']:.2f} s | {m['dns_s']:.2f} s | "
            f"{fmt(m['seq_p50_ms'])} ms | {fmt(m['seq_p99_ms'])} ms | {fmt(m['fresh_p50_ms'])} ms | "
            f"{m['fresh_violations']}/{m['seq_n']} | {m['rss_start_mb']:.0f} MB | {m['rss_mb']:.0f} MB | "
            f"{m['rss_per_peer_b']:.0f} B |")

    out.append("")
    out.append("Acceptance (issue 9), ratios from this run:\n")
    out.append("| check | value | target | met? |")
    out.append("|---|---:|---:|---|")

    def row(label, value, target, ok):
        out.append(f"| {label} | {value} | {target} | {'yes' if ok else 'NO'} |")

    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        ratio = hi["seq_p50_ms"] / lo["seq_p50_ms"]
        row(f"create p50 @{hi['peers']:,} / @{lo['peers']:,}", f"{ratio:.3f}×", "≤ 2×", ratio <= 2)
        ratio = hi["burst_per_s"] / lo["burst_per_s"]
        row(f"burst creates/s @{hi['peers']:,} / @{lo['peers']:,}", f"{ratio:.3f}×", "≥ 0.5×", ratio >= 0.5)
    if million and sizes:
        lo = sizes[0]
        ratio = million["seq_p50_ms"] / lo["seq_p50_ms"]
        row(f"create p50 @{million['peers']:,} / @{lo['peers']:,}", f"{ratio:.3f}×", "≤ 3×", ratio <= 3)
    if million:
        row(f"startup @{million['peers']:,} (load + first build)", f"{million['startup_s']:.2f} s", "≤ 10 s",
            million["startup_s"] <= 10)
        row("RSS growth per peer", f"{million['rss_per_peer_b']:.0f} B", "≤ 250 B",
            million["rss_per_peer_b"] <= 250)
    viol = sum(r["fresh_violations"] + r.get("grow_violations", 0) + r.get("delete_violations", 0) for r in sizes)
    viol += million["fresh_violations"] if million else 0
    checked = sum(r["seq_n"] + r.get("grow_checked", 0) + (a.delete_sample if "delete_violations" in r else 0)
                  for r in sizes) + (million["seq_n"] if million else 0)
    row("names late in DNS after their 200 / not NXDOMAIN after a token delete", f"{viol} of {checked} checked",
        "0", viol == 0)
    if viol:
        out.append("\nA create answered before its name is in DNS breaks the API's promise, and its latency then "
                   "understates the cost of the write: read the freshness columns (send → name answers) instead.")
    if results.get("server_warnings"):
        out.append("\nServer log warnings and errors (count, message):\n")
        for msg, n in sorted(results["server_warnings"].items(), key=lambda kv: -kv[1])[:10]:
            out.append(f"- {n} × `{msg}`")
    if results.get("dns_timeouts"):
        out.append(f"\nDNS queries that got no answer within 2 s and were asked again: {results['dns_timeouts']}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[1:]))
    ap.add_argument("--binary", default="target/release/sixpn")
    ap.add_argument("--sizes", default=None, help="org sizes to grow to through the API (default 1000,10000,100000)")
    ap.add_argument("--million", action="store_true", help="same as --seed-size 1000000")
    ap.add_argument("--seed-size", type=int, default=0, help="seed the store directly up to N peers, then time startup")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--probe", type=int, default=None, help="sequential creates per size (default 200)")
    ap.add_argument("--burst", type=int, default=None, help="creates per burst (default 2000)")
    ap.add_argument("--seed-probe", type=int, default=None, help="sequential creates at the seeded size (default --probe)")
    ap.add_argument("--groups", type=int, default=500, help="peers are spread over this many groups")
    ap.add_argument("--growth-check-every", type=int, default=None,
                    help="while growing, check every N-th create in DNS right after its 200 (0: never; default 100)")
    ap.add_argument("--delete-sample", type=int, default=None, help="peers of the token deleted at each size (default 5)")
    ap.add_argument("--time-budget", type=float, default=300,
                    help="seconds at most for one probe series or burst (stops early, after 5 samples)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dir and server log")
    ap.add_argument("--workdir", default=None, help="parent of the temporary dir (default $TMPDIR)")
    ap.add_argument("--json", default=None, help="also write the raw figures to this file")
    ap.add_argument("--rust-log", default="warn")
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run: defaults become sizes 200,1000, seed 20000, 50 probes, bursts of 200")
    a = ap.parse_args()
    if a.million and not a.seed_size:
        a.seed_size = 1_000_000
    # Defaults; --quick makes them small. Options given explicitly win either way.
    for opt, full, quick in (("sizes", "1000,10000,100000", "200,1000"), ("probe", 200, 50), ("burst", 2000, 200),
                             ("growth_check_every", 100, 10), ("delete_sample", 5, 3)):
        if getattr(a, opt) is None:
            setattr(a, opt, quick if a.quick else full)
    if a.quick and not a.seed_size:
        a.seed_size = 20000
    global SEED_GROUPS
    SEED_GROUPS = a.groups
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    if sizes != sorted(sizes) or any(s <= 0 for s in sizes):
        sys.exit("--sizes must be positive and increasing")
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no executable {binary}: build it with `cargo build --release --bin sixpn`")
    cmdline = "python3 " + " ".join(shlex.quote(x) for x in sys.argv)

    work = tempfile.mkdtemp(prefix="sixpn-scale-", dir=a.workdir)
    data_dir = os.path.join(work, "data")
    os.makedirs(data_dir)
    server = Server(binary, data_dir, "scale-" + os.urandom(16).hex(), a.rust_log)
    log(f"work dir {work}; API 127.0.0.1:{server.api_port}, DNS 127.0.0.1:{server.dns_port}")
    bench = Bench(a, server)
    results = {"command": cmdline, "sizes": [], "seeded": None}
    try:
        st = server.start()
        time.sleep(0.5)
        empty = {"startup_s": st["startup_s"], "rss_mb": server.rss_mb()}
        results["empty"] = empty
        log(f"empty server up in {st['startup_s']:.2f} s, RSS {empty['rss_mb']:.1f} MB")
        bench.main_token_name = f"scale-{os.urandom(3).hex()}"
        bench.main_token = bench.mint(bench.main_token_name)
        bench.connect()
        results["client_ceiling_per_s"] = bench.client_ceiling()
        log(f"client ceiling: {results['client_ceiling_per_s']:.0f} GET /healthz per s")

        for size in sizes:
            g = bench.grow_to(size)
            r = bench.measure(size)
            r.update(g)
            results["sizes"].append(r)

        million = None
        if a.seed_size:
            if bench.live == 0:  # the seed copies the region of one API-created peer
                bench.main_create(bench.clients[0][0])
            for c in bench.clients:
                c[0].close()
            log("stopping the server to seed the store")
            server.stop()
            log(f"seeding up to {a.seed_size:,} peers")
            k, seed_s, last, last_addr = seed(os.path.join(data_dir, "sixpn.db"), a.seed_size, bench.main_token_name)
            bench.live += k
            if k:
                bench.live = a.seed_size
            log(f"seeded {k:,} peers in {seed_s:.1f} s; starting the server")
            st = server.start(probe_name=last, probe_address=last_addr)
            rss_start = server.rss_mb()
            log(f"up in {st['startup_s']:.2f} s (API {st['api_s']:.2f} s, DNS {st['dns_s']:.2f} s), RSS {rss_start:.0f} MB")
            bench.connect()
            m = {"peers": bench.live, "seeded": k, "seed_s": seed_s, "rss_start_mb": rss_start}
            m.update(st)
            log(f"{a.seed_probe or a.probe} sequential creates at {bench.live:,} peers")
            m.update(bench.sequential(a.seed_probe or a.probe))
            m["rss_mb"] = server.rss_mb()
            m["hwm_mb"] = server.hwm_mb()
            m["rss_per_peer_b"] = (m["rss_mb"] - empty["rss_mb"]) * 1024 * 1024 / m["peers"]
            log(f"  p50 {m['seq_p50_ms']:.2f} ms; RSS {m['rss_mb']:.0f} MB ({m['rss_per_peer_b']:.0f} B/peer)")
            million = m
            results["seeded"] = m
    finally:
        for c in bench.clients:
            c[0].close()
        server.stop()
        warnings = server_warnings(server.log_path)
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    results["dns_timeouts"] = bench.dns_timeouts
    results["server_warnings"] = warnings
    text = report(a, results, million, empty, cmdline)
    print(text, flush=True)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
