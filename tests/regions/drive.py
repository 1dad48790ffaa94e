#!/usr/bin/env python3
"""drive.py - the measuring side of the three-region simulation (tests/regions/run.sh).

Talks to the sixpn replicas' APIs (HTTP) and DNS (UDP), and to delay_proxy.py's control port.
Every subcommand prints one JSON object on stdout. Only the Python 3 standard library is used.

  mint      --api URL --admin-token T                     -> {"token": ...}
  create    --api URL --token T --names a,b,...           -> {"acked": [...], "failed": {...}}
  freshness --token T --pair API=DNS --pair API=DNS --n N -> p50/p99 (ms) per pair and overall
  monitor   --dns ADDR --dns ADDR --out FILE              SOA serial every 20 ms until SIGTERM
  resolve   --dns ADDR --names FILE [--within S]          -> which names do not resolve
  partition --token T --cut LINK --control ADDR --seconds S --c-api URL --c-dns ADDR
            --b-api URL --names FILE                      -> the partition's figures
  proxy     --control ADDR CMD...                         -> the proxy's answer
"""
import argparse
import base64
import http.client
import json
import os
import random
import signal
import socket
import statistics
import struct
import sys
import threading
import time
import urllib.parse

# ---------------------------------------------------------------- DNS


def dns_query(server, name, qtype, timeout=1.0, tries=3):
    """One UDP query; returns the raw reply or None."""
    host, port = server.rsplit(":", 1)
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        for _ in range(tries):
            s.sendto(q, (host, int(port)))
            try:
                while True:
                    data, _ = s.recvfrom(4096)
                    if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                        return data
            except socket.timeout:
                continue
    finally:
        s.close()
    return None


def skip_name(data, i):
    while True:
        n = data[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def answers(data):
    """(rcode, [(type, rdata offset, rdlength)]) of a reply."""
    rcode = data[3] & 0x0F
    qd, an = struct.unpack(">HH", data[4:8])
    i = 12
    for _ in range(qd):
        i = skip_name(data, i) + 4
    out = []
    for _ in range(an):
        i = skip_name(data, i)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[i : i + 10])
        i += 10
        out.append((rtype, i, rdlen))
        i += rdlen
    return rcode, out


def resolves(dns, peer):
    data = dns_query(dns, f"{peer}._peer.internal", 28)
    if data is None:
        return None
    rcode, ans = answers(data)
    return rcode == 0 and any(t == 28 for t, _, _ in ans)


def soa_serial(dns):
    data = dns_query(dns, "internal", 6, timeout=0.5)
    if data is None:
        return None
    _, ans = answers(data)
    for t, off, _ in ans:
        if t == 6:
            j = skip_name(data, skip_name(data, off))
            return struct.unpack(">I", data[j : j + 4])[0]
    return None


# ---------------------------------------------------------------- HTTP


def request(api, method, path, token, body=None, timeout=30):
    u = urllib.parse.urlparse(api)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        c.request(method, path, body=payload, headers=headers)
        r = c.getresponse()
        text = r.read()
        try:
            return r.status, json.loads(text or b"null")
        except ValueError:
            return r.status, None
    except OSError as e:
        return 0, {"error": str(e)}
    finally:
        c.close()


def create(api, token, name):
    key = base64.b64encode(os.urandom(32)).decode()
    body = {"name": name, "group": "web", "pubkey": key, "region": ""}
    return request(api, "POST", "/api/v3/wire_guard_peers", token, body)


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))], 1)


# ---------------------------------------------------------------- subcommands


def cmd_mint(a):
    status, body = request(
        a.api, "POST", "/api/v1/orgs/personal/wireguard_tokens", a.admin_token,
        {"name": f"regions-{os.getpid()}", "group": "web"},
    )
    if status != 200 and status != 201:
        sys.exit(f"mint: {status} {body}")
    return {"token": body["token"]}


def cmd_create(a):
    acked, failed = [], {}
    for name in a.names.split(","):
        status, body = create(a.api, a.token, name)
        if status == 200:
            acked.append(name)
        else:
            failed[name] = [status, body]
    return {"acked": acked, "failed": failed}


def cmd_freshness(a):
    pairs = [p.split("=", 1) for p in a.pair]
    per, every, failed = {p[0]: [] for p in pairs}, [], []
    prefix = f"fr{os.getpid()}-"
    for i in range(a.n):
        api, dns = pairs[i % len(pairs)]
        name = f"{prefix}{i}"
        status, body = create(api, a.token, name)
        if status != 200:
            failed.append([name, status, body])
            continue
        t0 = time.monotonic()
        while True:
            ok = resolves(dns, name)
            took = (time.monotonic() - t0) * 1000
            if ok:
                break
            if took > 30000:
                failed.append([name, "not in the other region's DNS within 30 s"])
                break
            time.sleep(0.002)
        if ok:
            per[api].append(took)
            every.append(took)
    return {
        "n": a.n,
        "answered": len(every),
        "failed": failed[:10],
        "n_failed": len(failed),
        "p50_ms": pct(every, 50),
        "p99_ms": pct(every, 99),
        "max_ms": round(max(every), 1) if every else None,
        "by_api": {
            api: {"n": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)}
            for api, v in per.items()
        },
    }


def cmd_monitor(a):
    state = {d: {"answers": 0, "missed": 0, "back": [], "last": 0, "first": None} for d in a.dns}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        for d in a.dns:
            s = soa_serial(d)
            st = state[d]
            if s is None:
                st["missed"] += 1
                continue
            st["answers"] += 1
            if st["first"] is None:
                st["first"] = s
            if s < st["last"]:
                st["back"].append([st["last"], s])
            st["last"] = max(st["last"], s)
        stop.wait(0.02)
    with open(a.out, "w") as f:
        json.dump(state, f)
    return None


def cmd_resolve(a):
    names = [n for n in open(a.names).read().split() if n]
    deadline = time.monotonic() + a.within
    missing = {d: list(names) for d in a.dns}
    while True:
        for d in a.dns:
            missing[d] = [n for n in missing[d] if not resolves(d, n)]
        if all(not m for m in missing.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return {"names": len(names), "missing": {d: m[:10] for d, m in missing.items()},
            "n_missing": sum(len(m) for m in missing.values())}


def proxy(control, *words):
    host, port = control.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall((" ".join(words) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    text = data.decode().strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_proxy(a):
    return {"reply": proxy(a.control, *a.words)}


def cmd_partition(a):
    names = [n for n in open(a.names).read().split() if n]
    stop = threading.Event()
    dns = {"queries": 0, "unanswered": 0, "not_found": 0, "longest_gap_ms": 0.0}

    def check_dns():
        # Every name C had, round-robin, as fast as one client goes; a gap is the time between
        # two good answers.
        last_good = time.monotonic()
        i = 0
        while not stop.is_set():
            name = names[i % len(names)]
            i += 1
            ok = resolves(a.c_dns, name)
            dns["queries"] += 1
            now = time.monotonic()
            if ok:
                dns["longest_gap_ms"] = max(dns["longest_gap_ms"], (now - last_good) * 1000)
                last_good = now
            elif ok is None:
                dns["unanswered"] += 1
            else:
                dns["not_found"] += 1
            time.sleep(0.005)

    checker = threading.Thread(target=check_dns, daemon=True)
    checker.start()
    time.sleep(1)
    proxy(a.control, "mode", a.cut, a.how)
    cut_at = time.monotonic()
    c_writes, b_acked, b_failed = [], [], []
    k = 0
    while time.monotonic() - cut_at < a.seconds:
        k += 1
        t0 = time.monotonic()
        status, body = create(a.c_api, a.token, f"cut-c{os.getpid()}-{k}")
        if status != 503:
            print(json.dumps({"c_write": status, "body": body}), file=sys.stderr)
        c_writes.append([status, round((time.monotonic() - t0) * 1000, 1),
                         bool(body and body.get("error"))])
        name = f"cut-b{os.getpid()}-{k}"
        status, body = create(a.b_api, a.token, name)
        (b_acked if status == 200 else b_failed).append(name if status == 200 else [name, status])
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
    proxy(a.control, "mode", a.cut, "pass")
    healed = time.monotonic()
    missing = list(b_acked)
    while missing and time.monotonic() - healed < 30:
        missing = [n for n in missing if not resolves(a.c_dns, n)]
        if missing:
            time.sleep(0.02)
    caught_up_s = round(time.monotonic() - healed, 2)
    time.sleep(0.5)
    stop.set()
    checker.join()
    return {
        "seconds": a.seconds,
        "how": a.how,
        "c_dns": dns,
        "c_writes": {
            "n": len(c_writes),
            "all_503": all(s == 503 for s, _, _ in c_writes),
            "all_json_error": all(e for _, _, e in c_writes),
            "max_ms": max(ms for _, ms, _ in c_writes) if c_writes else None,
            "statuses": sorted({s for s, _, _ in c_writes}),
        },
        "b_writes": {"acked": len(b_acked), "failed": b_failed[:5]},
        "c_has_b_writes_after_heal_s": caught_up_s,
        "c_missing_after_30s": missing[:5],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("mint")
    p.add_argument("--api", required=True)
    p.add_argument("--admin-token", required=True)
    p = sub.add_parser("create")
    p.add_argument("--api", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--names", required=True)
    p = sub.add_parser("freshness")
    p.add_argument("--token", required=True)
    p.add_argument("--pair", action="append", required=True)
    p.add_argument("--n", type=int, default=1000)
    p = sub.add_parser("monitor")
    p.add_argument("--dns", action="append", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("resolve")
    p.add_argument("--dns", action="append", required=True)
    p.add_argument("--names", required=True)
    p.add_argument("--within", type=float, default=10)
    p = sub.add_parser("partition")
    for k in ("token", "cut", "control", "c-api", "c-dns", "b-api", "names"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--how", default="refuse", choices=["refuse", "blackhole"])
    p = sub.add_parser("proxy")
    p.add_argument("--control", required=True)
    p.add_argument("words", nargs="+")
    a = ap.parse_args()
    out = globals()["cmd_" + a.cmd](a)
    if out is not None:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
