#!/usr/bin/python3
"""drain - the pressure table's drain alone, for sluice, with a look inside

Makes a `sluice init` instance of SLUICE_TOP (default: this tree) with
qmgr taken out of master.cf, loads it with MESSAGES messages from
smtp-source (50 sessions, as bench.py's pressure table), puts qmgr back
(`sluice reload`) and waits until the smtp-sink has counted them all.
Prints the drain's time and rate, the instance's CPU per message during
the drain, and the CPU each daemon used since its start (from /proc).
With -p, `perf record -a -g` runs through the drain (perf.data in
/tmp/drain.perf); with -P NAME, `perf record --call-graph dwarf` follows
the first process of daemon NAME (qmgr, events, smtp) instead.

    drain.py [-m MESSAGES] [-p | -P NAME] [name=value ...]

Extra main.cf settings follow as name=value arguments (they are passed as
BENCH_SLUICE_CONF). Run as root, like make bench. Leaves nothing running.
The machine is shared and noisy: compare trees by alternating runs.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = Path(os.environ.get("SLUICE_TOP", HERE.parent)).resolve()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--messages", type=int, default=50000)
    ap.add_argument("-p", "--perf", action="store_true")
    ap.add_argument("-P", "--perf-daemon")
    ap.add_argument("conf", nargs="*")
    args = ap.parse_args()
    os.environ["BENCH_MTAS"] = "sluice"
    if args.conf:
        os.environ["BENCH_SLUICE_CONF"] = " ".join(args.conf)
    sys.path.insert(0, str(TOP / "bench"))
    import bench as B  # noqa: E402 (after SLUICE_TOP and the settings)

    b = B.Bench()
    b.sink = B.Sink(B.free_port())
    mta = b.make("sluice", "drain")
    mta.pause_qmgr()
    mta.start()
    perf = None
    try:
        load = B.source_load(mta.port, args.messages, 50)
        depth = mta.queued()
        root = mta.master_pid()
        base = b.sink.count
        cpu0 = B.tree_cpu(root)
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "999",
                                     "-o", "/tmp/drain.perf"],
                                    stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        mta.resume_qmgr()
        if args.perf_daemon:
            pid = [p for p in B.tree(mta.master_pid())
                   if B.proc_name(p) == args.perf_daemon][0]
            perf = subprocess.Popen(["perf", "record", "--call-graph",
                                     "dwarf,16384", "-F", "499", "-p", str(pid),
                                     "-o", "/tmp/drain.perf"],
                                    stderr=subprocess.DEVNULL)
        done = B.sink_wait(b.sink, base + depth, mta, stall=60.0)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
            perf = None
        cpu1 = B.tree_cpu(mta.master_pid() or root)
        if not done:
            print("the queue did not drain (sink at %d of %d)"
                  % (b.sink.count - base, depth))
            return 1
        print("depth %d: accepted in %.1f s, drained in %.1f s = %.0f msg/s, "
              "cpu %.3f ms/msg during the drain"
              % (depth, load["elapsed"], done - t0, depth / (done - t0),
                 (cpu1 - cpu0) * 1000.0 / depth))
        per = {}
        for pid, (_, own, _) in B.tree(mta.master_pid() or root).items():
            name = B.daemon_of(B.proc_name(pid))
            per[name] = per.get(name, 0.0) + own / B.TICK
        print("cpu seconds since start: " + ", ".join(
            "%s %.2f" % kv for kv in sorted(per.items(), key=lambda kv: -kv[1])
            if kv[1] >= 0.01))
    finally:
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        mta.stop()
        b.sink.stop()
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
