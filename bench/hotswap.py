#!/usr/bin/env python3
"""Rewrites a WasmPlugin file on a fixed period while wasmgate serves load, and measures the swaps.

Each write puts a new generation number into the file (the template's @GEN@), atomically: written
to a hidden temp file in the same directory (the config loader ignores hidden files), then renamed
over the real one. Between writes one keep-alive connection polls the gateway and records when each
generation first shows up in the response header. Prints one line of key=value results:

  swaps            files written
  observed         generations seen in a response (others were superseded before taking effect)
  lag_p50_ms ...   write -> first response carrying that generation or a newer one, over every
                   write: how long the gateway kept serving a config older than the file's
  unapplied        writes never reflected in a response (not even by a newer generation)
  final_ms         last write -> first response carrying it (no write after it); -1 if never seen
  polls, poll_errors   poller requests, and those without a 200 or with a transport error
  reloads          change of wasmgate_config_reloads_total{result="success"} (-1 if not exported)
  rss_*_kib        VmRSS of the gateway before the first write, after 10% of the writes, at the end

Standard library only; bounded in time by --duration / --swaps and the 5 s settle timeout.
"""

import argparse
import http.client
import os
import re
import statistics
import sys
import time

SETTLE_TIMEOUT_S = 5.0
POLL_PAUSE_S = 0.002


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def reloads(admin):
    """Sum of wasmgate_config_reloads_total{result="success"}, or -1 when absent."""
    host, port = admin.rsplit(":", 1)
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=2)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode("utf-8", "replace")
        conn.close()
    except OSError:
        return -1
    pat = re.compile(r'^wasmgate_config_reloads_total\{[^}]*result="success"[^}]*\}\s+([0-9.eE+]+)$')
    total, found = 0.0, False
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            total += float(m.group(1))
            found = True
    return int(total) if found else -1


class Poller:
    def __init__(self, host, port, path, headers, header_name):
        self.addr = (host, port)
        self.path = path
        self.headers = headers
        self.header_name = header_name
        self.conn = None
        self.polls = 0
        self.errors = 0

    def get(self):
        """The header's value in a fresh response, or None on an error."""
        self.polls += 1
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(*self.addr, timeout=2)
            self.conn.request("GET", self.path, headers=self.headers)
            resp = self.conn.getresponse()
            resp.read()
            if resp.status != 200:
                self.errors += 1
                return None
            return resp.getheader(self.header_name)
        except (OSError, http.client.HTTPException):
            self.errors += 1
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None


def write_gen(template, target, gen):
    tmp = os.path.join(os.path.dirname(target), "." + os.path.basename(target) + ".tmp")
    with open(tmp, "w") as f:
        f.write(template.replace("@GEN@", str(gen)))
    os.replace(tmp, target)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--template", required=True, help="file whose @GEN@ is replaced")
    ap.add_argument("--target", required=True, help="the WasmPlugin file in the config dir")
    ap.add_argument("--url-host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/productpage")
    ap.add_argument("--header", action="append", default=[], help="request header 'Name: value'")
    ap.add_argument("--watch-header", default="x-bench-gen")
    ap.add_argument("--admin", required=True, help="admin host:port")
    ap.add_argument("--pid", type=int, required=True, help="gateway pid (RSS)")
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--swaps", type=int, default=0, help="number of writes (or use --duration)")
    ap.add_argument("--duration", type=float, default=0, help="seconds of writing")
    args = ap.parse_args()

    with open(args.template) as f:
        template = f.read()
    headers = dict(h.split(": ", 1) for h in args.header)
    poller = Poller(args.url_host, args.port, args.path, headers, args.watch_header)
    interval = args.interval_ms / 1000
    n = args.swaps or max(1, int(args.duration / interval))

    rss_before = rss_kib(args.pid)
    reloads_before = reloads(args.admin)
    written = {}      # gen -> monotonic time of its write
    first_seen = {}   # gen -> monotonic time of the first response carrying it
    lag = {}          # gen -> seconds from its write to a response carrying it or a newer gen
    rss_10 = -1

    def poll_once():
        value = poller.get()
        if value is not None and value.isdigit():
            gen, now = int(value), time.monotonic()
            if gen in written and gen not in first_seen:
                first_seen[gen] = now
            for g in range(len(lag) + 1, min(gen, len(written)) + 1):
                lag[g] = now - written[g]
        return value

    next_write = time.monotonic()
    for gen in range(1, n + 1):
        write_gen(template, args.target, gen)
        written[gen] = time.monotonic()
        next_write += interval
        while time.monotonic() < next_write:
            poll_once()
            time.sleep(POLL_PAUSE_S)
        if gen == max(1, n // 10):
            rss_10 = rss_kib(args.pid)

    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while n not in first_seen and time.monotonic() < deadline:
        poll_once()
        time.sleep(POLL_PAUSE_S)
    final_ms = (first_seen[n] - written[n]) * 1000 if n in first_seen else -1
    time.sleep(1)  # let the last swap's garbage (old VMs, old config) be freed before reading RSS
    rss_after = rss_kib(args.pid)
    reloads_after = reloads(args.admin)

    lags = [v * 1000 for v in lag.values()]
    out = {
        "swaps": n,
        "observed": len(first_seen),
        "lag_p50_ms": f"{statistics.median(lags):.1f}" if lags else "-1",
        "lag_p90_ms": f"{pct(lags, 90):.1f}" if lags else "-1",
        "lag_max_ms": f"{max(lags):.1f}" if lags else "-1",
        "unapplied": n - len(lags),
        "final_ms": f"{final_ms:.1f}",
        "polls": poller.polls,
        "poll_errors": poller.errors,
        "reloads": -1 if reloads_before < 0 or reloads_after < 0 else reloads_after - reloads_before,
        "rss_before_kib": rss_before,
        "rss_10pct_kib": rss_10,
        "rss_after_kib": rss_after,
    }
    print("SWAPS " + " ".join(f"{k}={v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
