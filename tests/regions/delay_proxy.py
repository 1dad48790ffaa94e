#!/usr/bin/env python3
"""delay_proxy.py - a delaying TCP proxy standing for the WAN links between simulated regions.

This kernel has no netem, so the harness (tests/regions/run.sh) sends every inter-region TCP
connection (PostgreSQL replication, sixpn's database connections) through this proxy.

Each link is `NAME=LISTEN_HOST:PORT>TARGET_HOST:PORT@DELAY_MS`: bytes are forwarded both ways,
each chunk delivered DELAY_MS after it was read (one-way delay; order kept). A link's mode is
  pass       forward (the default)
  refuse     close every open connection and refuse new ones (a cut that clients see at once)
  blackhole  accept and hold connections but forward nothing (a cut that clients see only
             through their own timeouts); back to `pass`, the held bytes are dropped
Per link, bytes are counted in each direction: `up` (client to target) and `down`.

Control: one line per TCP connection to --control (127.0.0.1:PORT), answered with one line:
  delay NAME MS            set the one-way delay
  mode NAME pass|refuse|blackhole
  stats                    JSON: {NAME: {"up": bytes, "down": bytes, "delay_ms": .., "mode": ..,
                           "open": connections}}
  reset                    zero the byte counters

Usage: delay_proxy.py --control 127.0.0.1:47499 --link ab=10.117.0.254:47420>10.117.0.1:47410@20 ...
Only the Python 3 standard library is used.
"""
import argparse
import asyncio
import json
import sys
import time


class Link:
    def __init__(self, spec):
        name, rest = spec.split("=", 1)
        listen, rest = rest.split(">", 1)
        target, delay = rest.rsplit("@", 1)
        self.name = name
        self.listen = listen.rsplit(":", 1)
        self.target = target.rsplit(":", 1)
        self.delay = float(delay) / 1000.0
        self.mode = "pass"
        self.up = 0
        self.down = 0
        self.conns = set()

    def stats(self):
        return {
            "up": self.up,
            "down": self.down,
            "delay_ms": round(self.delay * 1000, 3),
            "mode": self.mode,
            "open": len(self.conns),
        }


class Conn:
    def __init__(self, link, creader, cwriter):
        self.link = link
        self.creader = creader
        self.cwriter = cwriter
        self.twriter = None
        self.tasks = []

    def close(self):
        for t in self.tasks:
            t.cancel()
        for w in (self.cwriter, self.twriter):
            if w is not None:
                try:
                    w.close()
                except Exception:
                    pass
        self.link.conns.discard(self)

    async def run(self):
        link = self.link
        try:
            treader, self.twriter = await asyncio.open_connection(
                link.target[0], int(link.target[1])
            )
        except OSError:
            self.close()
            return
        self.tasks = [
            asyncio.ensure_future(self.pump(self.creader, self.twriter, "up")),
            asyncio.ensure_future(self.pump(treader, self.cwriter, "down")),
        ]
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        self.close()

    async def pump(self, reader, writer, direction):
        """Reads chunks and hands them to a writer task that delivers each at its due time."""
        queue = asyncio.Queue()
        deliver = asyncio.ensure_future(self.deliver(queue, writer))
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.link.mode == "blackhole":
                    continue
                if direction == "up":
                    self.link.up += len(data)
                else:
                    self.link.down += len(data)
                queue.put_nowait((time.monotonic() + self.link.delay, data))
        finally:
            queue.put_nowait(None)
            try:
                await deliver
            except asyncio.CancelledError:
                deliver.cancel()
                raise

    async def deliver(self, queue, writer):
        while True:
            item = await queue.get()
            if item is None:
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.link.mode == "blackhole":
                continue
            writer.write(data)
            await writer.drain()


async def serve_link(link):
    async def accept(reader, writer):
        if link.mode == "refuse":
            writer.close()
            return
        conn = Conn(link, reader, writer)
        link.conns.add(conn)
        await conn.run()

    return await asyncio.start_server(accept, link.listen[0], int(link.listen[1]))


async def control(links, reader, writer):
    try:
        line = (await reader.readline()).decode().split()
        reply = "ok"
        if not line:
            reply = "error: empty command"
        elif line[0] == "stats":
            reply = json.dumps({n: l.stats() for n, l in links.items()})
        elif line[0] == "reset":
            for l in links.values():
                l.up = l.down = 0
        elif line[0] == "delay" and len(line) == 3 and line[1] in links:
            links[line[1]].delay = float(line[2]) / 1000.0
        elif line[0] == "mode" and len(line) == 3 and line[1] in links:
            link = links[line[1]]
            if line[2] not in ("pass", "refuse", "blackhole"):
                reply = "error: mode is pass, refuse or blackhole"
            else:
                link.mode = line[2]
                if link.mode == "refuse":
                    for conn in list(link.conns):
                        conn.close()
        else:
            reply = "error: unknown command or link"
        writer.write((reply + "\n").encode())
        await writer.drain()
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--control", required=True)
    ap.add_argument("--link", action="append", required=True)
    a = ap.parse_args()
    links = {}
    for spec in a.link:
        link = Link(spec)
        links[link.name] = link
    servers = [await serve_link(l) for l in links.values()]
    host, port = a.control.rsplit(":", 1)
    servers.append(
        await asyncio.start_server(lambda r, w: control(links, r, w), host, int(port))
    )
    print("delay_proxy: ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
