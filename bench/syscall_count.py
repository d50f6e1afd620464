#!/usr/bin/python3
"""syscall_count - system calls per message in each sluice daemon, by kind

Starts a `sluice init` instance of SLUICE_TOP (default: this tree) under
`strace -f -ff` (every call traced, so the daemons run slower; the counts
are what matters, not the rates), relaying to an smtp-sink, feeds it
MESSAGES messages from smtpgen.py with SESSIONS sessions, and prints per
daemon the processes seen and the calls per accepted message, the most
frequent kinds, with failing calls counted apart (accept4 EAGAIN is the
accept herd). Extra main.cf settings follow as name=value arguments.

    syscall_count.py [-m MESSAGES] [-s SESSIONS] [-t TOP] [-k] [name=value ...]

Run as root (smtp-sink drops to nobody). Leaves nothing running.
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = Path(os.environ.get("SLUICE_TOP", HERE.parent)).resolve()
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (its helpers: ports, sink, kill_tree)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--messages", type=int, default=1000)
    ap.add_argument("-s", "--sessions", type=int, default=10)
    ap.add_argument("-l", "--size", type=int, default=2048)
    ap.add_argument("-t", "--top", type=int, default=8)
    ap.add_argument("-k", "--keep", action="store_true",
                    help="keep the traces (their folder is printed)")
    ap.add_argument("conf", nargs="*")
    args = ap.parse_args()
    if shutil.which("strace") is None:
        sys.exit("syscall_count: strace is needed")
    folder = Path(tempfile.mkdtemp(prefix="sluice-sys-"))
    os.chmod(folder, 0o755)  # the daemons run as nobody
    sink = bench.Sink(bench.free_port())
    port = bench.free_port()
    sluice = TOP / "bin" / "sluice"
    env = dict(os.environ)
    env.pop("SLUICE_CONFIG", None)
    inst = folder / "inst"
    subprocess.run([str(sluice), "init", str(inst), "--smtp-port", str(port),
                    "--relayhost", "[127.0.0.1]:%d" % sink.port], check=True,
                   capture_output=True, env=env)
    conf = ["events_enable=no"] + args.conf
    subprocess.run([str(sluice), "-c", str(inst), "conf"] + conf, check=True,
                   capture_output=True, env=env)
    trace = folder / "trace"
    tracer = subprocess.Popen(
        ["strace", "-f", "-ff", "-o", str(trace),
         str(sluice), "-c", str(inst), "start", "-f"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env)
    try:
        if not bench.wait_port(port):
            sys.exit("syscall_count: sluice did not listen on %d" % port)
        gen = subprocess.run(
            [sys.executable, str(HERE / "smtpgen.py"), "-s", str(args.sessions),
             "-m", str(args.messages), "-l", str(args.size),
             "127.0.0.1:%d" % port], capture_output=True, check=True)
        result = json.loads(gen.stdout)
        deadline = time.time() + 120
        while sink.count < result["messages"] and time.time() < deadline:
            time.sleep(0.2)
    finally:
        subprocess.run([str(sluice), "-c", str(inst), "stop"], env=env,
                       capture_output=True, timeout=60)
        try:
            tracer.wait(30)
        except subprocess.TimeoutExpired:
            bench.kill_tree(tracer.pid)
        sink.stop()

    counts = collections.defaultdict(collections.Counter)
    procs = collections.Counter()
    call = re.compile(r"^(\w+)\(")
    for f in folder.glob("trace.*"):
        name, c = None, collections.Counter()
        for line in f.read_text(errors="replace").splitlines():
            m = call.match(line)
            if not m:
                continue
            kind = m.group(1)
            if kind == "execve" and "= 0" in line:
                name = os.path.basename(line.split('"')[1])
                c = collections.Counter()  # what the exec'ing parent did
                continue
            err = re.search(r"= -1 (E[A-Z]+)", line)
            c[kind + (" " + err.group(1) if err else "")] += 1
        if name is None or name == "sluice":
            continue
        procs[name] += 1
        counts[name].update(c)
    n = result["messages"]
    print("# %s: %d messages accepted (%d errors), %d sessions, delivered %d;"
          " %s" % (TOP, n, result.get("errors", 0), args.sessions, sink.count,
                   " ".join(conf)))
    total = collections.Counter()
    for name in counts:
        total.update(counts[name])
    print("| daemon | processes | calls/msg | most frequent (calls/msg) |")
    print("|---|---|---|---|")
    for name in sorted(counts) + ["all"]:
        c = total if name == "all" else counts[name]
        top = ", ".join("%s %.2f" % (k, v / n)
                        for k, v in c.most_common(args.top))
        print("| %s | %s | %.1f | %s |" % (
            name, sum(procs.values()) if name == "all" else procs[name],
            sum(c.values()) / n, top))
    picks = ("accept4", "accept4 EAGAIN", "connect", "socket", "close",
             "epoll_ctl", "epoll_wait")
    print("| all: " + ", ".join("%s %.2f" % (k, total[k] / n) for k in picks)
          + " |")
    if args.keep:
        print("traces kept in %s" % folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
