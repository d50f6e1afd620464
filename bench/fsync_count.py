#!/usr/bin/python3
"""fsync_count - fsyncs and renames per message in each sluice daemon

Starts a `sluice init` instance of SLUICE_TOP (default: this tree) under
`strace -f --seccomp-bpf` (only execve, fsync, fdatasync and the renames
are traced, so the daemons run at nearly full speed), relaying to an
smtp-sink, feeds it MESSAGES messages from smtpgen.py with SESSIONS
sessions, and prints per daemon the processes seen and the fsync,
fdatasync and rename calls per accepted message. Extra main.cf settings
follow as name=value arguments.

    fsync_count.py [-m MESSAGES] [-s SESSIONS] [name=value ...]

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

CALLS = ("fsync", "fdatasync", "rename", "renameat", "renameat2")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--messages", type=int, default=2000)
    ap.add_argument("-s", "--sessions", type=int, default=10)
    ap.add_argument("-l", "--size", type=int, default=2048)
    ap.add_argument("conf", nargs="*")
    args = ap.parse_args()
    if shutil.which("strace") is None:
        sys.exit("fsync_count: strace is needed")
    folder = Path(tempfile.mkdtemp(prefix="sluice-fsync-"))
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
        ["strace", "-f", "-ff", "--seccomp-bpf", "-e",
         "trace=execve," + ",".join(CALLS), "-o", str(trace),
         str(sluice), "-c", str(inst), "start", "-f"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env)
    try:
        if not bench.wait_port(port):
            sys.exit("fsync_count: sluice did not listen on %d" % port)
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
            if m.group(1) == "execve" and "= 0" in line:
                name = os.path.basename(line.split('"')[1])
            elif m.group(1) in CALLS and re.search(r"= 0$", line.split(" <")[0]):
                c[m.group(1)] += 1
        if name is None or name == "sluice":
            continue
        procs[name] += 1
        counts[name].update(c)
    n = result["messages"]
    print("# %s: %d messages accepted (%d errors), %d sessions, %.0f msg/s "
          "under strace, delivered %d; %s" % (TOP, n, result.get("errors", 0),
                                              args.sessions, result["rate"],
                                              sink.count, " ".join(conf)))
    print("| daemon | processes | fsync/msg | fdatasync/msg | rename/msg |")
    print("|---|---|---|---|---|")
    for name in sorted(counts):
        c = counts[name]
        ren = c["rename"] + c["renameat"] + c["renameat2"]
        print("| %s | %d | %.3f | %.3f | %.3f |" % (
            name, procs[name], c["fsync"] / n, c["fdatasync"] / n, ren / n))
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
