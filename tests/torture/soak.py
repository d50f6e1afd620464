"""soak - a steady load for a long time: the daemons' memory and open
descriptors must not grow (issue 6, item 6; `make torture`)

An SMTP client sends SOAK_RATE messages a second (default 20) for
SOAK_SECONDS (default 3600) into an instance that relays everything to an
aiosmtpd sink. After SOAK_WARMUP seconds (default 10% of the run, at least
10) each daemon's VmRSS and number of open descriptors (/proc/PID/fd) are
sampled, and again at the end while the load still runs. A growth beyond
SOAK_RSS_TOLERANCE_KB (default 2048 kB) plus SOAK_RSS_TOLERANCE_PCT (default
10%) of the start value, or of more than SOAK_FD_TOLERANCE descriptors
(default 2), fails. Every message must reach the sink. A table is printed.

Run: SLUICE_TOP=. /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/torture/soak.py
(pytest collects this file only when named: `make check` never runs it).
"""

import os
import smtplib
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import LIBEXEC, require, wait_until   # noqa: E402

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "pickup", "bounce")
RATE = float(os.environ.get("SOAK_RATE", "20"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "3600"))
WARMUP = float(os.environ.get("SOAK_WARMUP", str(max(10.0, SECONDS / 10))))
RSS_KB = int(os.environ.get("SOAK_RSS_TOLERANCE_KB", "2048"))
RSS_PCT = float(os.environ.get("SOAK_RSS_TOLERANCE_PCT", "10"))
FD_TOL = int(os.environ.get("SOAK_FD_TOLERANCE", "2"))


def vm_rss_kb(pid):
    try:
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def sample(inst):
    """{daemon: (pids, total VmRSS kB, total fds)} of the instance now."""
    procs = {}
    mpid = inst.master_pid()
    if mpid:
        procs[mpid] = "master"
        procs.update(inst.children())
    out = {}
    for pid, name in procs.items():
        rss, fds = vm_rss_kb(pid), fd_count(pid)
        if rss is None or fds is None:
            continue
        pids, r, f = out.get(name, ((), 0, 0))
        out[name] = (pids + (pid,), r + rss, f + fds)
    return out


class Load:
    """One client thread sending at a steady rate; counts what got 250."""

    def __init__(self, inst, rate, seconds):
        self.inst, self.rate, self.seconds = inst, rate, seconds
        self.sent = 0
        self.failed = 0
        self.ids = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        start = time.monotonic()
        client = None
        n = 0
        while time.monotonic() - start < self.seconds:
            due = start + n / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            msgid = "soak-%d" % n
            body = ("Subject: soak %d\r\nMessage-ID: <%s@soak.test>\r\n\r\n"
                    "soak line\r\n" % (n, msgid)).encode()
            n += 1
            try:
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", self.inst.port, timeout=30)
                    client.ehlo("client.test")
                client.sendmail("soak@client.test", ["rcpt%d@dest.test" % (n % 50)], body)
                self.sent += 1
                self.ids.append(msgid)
                if n % 100 == 0:          # fresh connections now and then
                    client.quit()
                    client = None
            except (OSError, smtplib.SMTPException):
                self.failed += 1
                client = None
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                pass


def growth_ok(name, a, b):
    """Complaints (list) about daemon name between samples a and b."""
    bad = []
    if b[1] > a[1] + RSS_KB + a[1] * RSS_PCT / 100:
        bad.append("%s: VmRSS %d -> %d kB" % (name, a[1], b[1]))
    if b[2] > a[2] + FD_TOL:
        bad.append("%s: fds %d -> %d" % (name, a[2], b[2]))
    return bad


def test_soak(make_instance, make_sink):
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp")))
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params={"mynetworks": "127.0.0.0/8",
                                 "smtp_connection_cache_time_limit": "2s"})
    load = Load(inst, RATE, SECONDS)
    load.thread.start()
    time.sleep(min(WARMUP, SECONDS / 2))
    first = sample(inst)
    first_at = time.monotonic()
    load.thread.join(SECONDS + 120)
    last = sample(inst)          # the last message was just sent: still busy
    span = time.monotonic() - first_at

    print()
    print("soak: %.0f msg/s for %.0fs (+%.0fs warm-up): %d sent, %d refused"
          % (RATE, SECONDS - WARMUP, WARMUP, load.sent, load.failed))
    print("%-8s %8s %8s %8s %6s %6s  %s" % ("daemon", "rss0 kB", "rss1 kB",
                                            "d kB", "fd0", "fd1", "pids"))
    complaints = []
    for name in DAEMONS:
        a, b = first.get(name), last.get(name)
        if not a or not b:
            print("%-8s %s" % (name, "not running at both samples"))
            continue
        same = "same" if set(a[0]) == set(b[0]) else "%s -> %s" % (a[0], b[0])
        print("%-8s %8d %8d %+8d %6d %6d  %s" % (name, a[1], b[1], b[1] - a[1],
                                                  a[2], b[2], same))
        complaints += growth_ok(name, a, b)
    print("(samples %.0fs apart)" % span)

    want = set(load.ids)

    def arrived():
        got = set()
        for m in sink.received():
            for line in m.data.split(b"\r\n"):
                if line.startswith(b"Message-ID: <soak-"):
                    got.add(line[13:].split(b"@")[0].decode())
        return want <= got
    wait_until(arrived, 120, interval=0.5, what="every soak message at the sink")
    print("delivered: all %d" % len(want))
    assert load.sent > 0
    assert not complaints, "growth: " + "; ".join(complaints)
