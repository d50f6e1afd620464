#!/usr/bin/python3
"""map_bench - build and query a big hash: table: `sluice map` against
Postfix's postmap (when /usr/sbin/postmap exists)

    /usr/bin/python3 bench/map_bench.py [--keys N] [--queries Q]

In a temporary folder (removed afterwards): writes one text table of N
keys ("userNNNNNNN@example.test  relay:[hNNN.example.test]"), builds
hash:FILE with each tool (timed, wall clock), then times Q lookups of
random keys, each one `TOOL -q KEY hash:FILE` process (so a query costs a
process start plus the open of the .db; one process per key is what a
shell script pays). Prints one markdown table:

    | tool | keys | build s | .db MiB | query ms |

Postfix's postmap runs with -c on an empty main.cf of its own, so it
needs no system configuration. Defaults: 1,000,000 keys, 200 queries
(about a minute in all on a 2-CPU machine). SLUICE_TOP names the build
tree whose bin/sluice runs (default: the folder above this one).
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(os.environ.get("SLUICE_TOP", Path(__file__).resolve().parents[1]))
SLUICE = TOP / "bin" / "sluice"
POSTMAP = Path("/usr/sbin/postmap")


def write_table(path, keys):
    """The text table; returns the seconds it took (not counted)."""
    with open(path, "w") as f:
        for start in range(0, keys, 10000):
            f.write("".join("user%07d@example.test relay:[h%d.example.test]\n"
                            % (i, i % 997)
                            for i in range(start, min(keys, start + 10000))))


def timed(argv):
    """Run argv (must succeed); seconds taken."""
    start = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    took = time.monotonic() - start
    if r.returncode != 0:
        sys.exit("map_bench: %s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                r.stderr.strip()))
    return took


def bench_tool(name, build_argv, query_argv, db, keys, queries, rng):
    """One row: build, then `queries` lookups of random keys."""
    build_s = timed(build_argv)
    size_mib = db.stat().st_size / (1024 * 1024)
    picks = [rng.randrange(keys) for _ in range(queries)]
    start = time.monotonic()
    for i in picks:
        key = "user%07d@example.test" % i
        r = subprocess.run(query_argv(key), capture_output=True, text=True)
        want = "relay:[h%d.example.test]" % (i % 997)
        if r.returncode != 0 or r.stdout.strip() != want:
            sys.exit("map_bench: %s -q %s: exit %d, %r" % (
                name, key, r.returncode, r.stdout + r.stderr))
    query_ms = (time.monotonic() - start) * 1000 / max(queries, 1)
    return (name, keys, build_s, size_mib, query_ms)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1000000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    if not os.access(SLUICE, os.X_OK):
        sys.exit("map_bench: %s is not built (run make)" % SLUICE)

    work = Path(tempfile.mkdtemp(prefix="map_bench-"))
    rows = []
    try:
        rng = random.Random(1)
        sluice_text = work / "sluice_table"
        write_table(sluice_text, args.keys)
        spec = "hash:%s" % sluice_text
        rows.append(bench_tool(
            "sluice map", [str(SLUICE), "map", spec],
            lambda key: [str(SLUICE), "map", "-q", key, spec],
            work / "sluice_table.db", args.keys, args.queries, rng))

        if os.access(POSTMAP, os.X_OK):
            conf = work / "postfix"
            conf.mkdir()
            (conf / "main.cf").write_text("")
            postfix_text = work / "postfix_table"
            shutil.copyfile(sluice_text, postfix_text)
            pspec = "hash:%s" % postfix_text
            rows.append(bench_tool(
                "postmap", [str(POSTMAP), "-c", str(conf), pspec],
                lambda key: [str(POSTMAP), "-c", str(conf), "-q", key, pspec],
                work / "postfix_table.db", args.keys, args.queries, rng))
        else:
            print("(%s not found: Postfix's row skipped)" % POSTMAP)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| tool | keys | build s | .db MiB | query ms |")
    print("|---|---:|---:|---:|---:|")
    for name, keys, build_s, size_mib, query_ms in rows:
        print("| %s | %d | %.2f | %.1f | %.2f |" % (name, keys, build_s,
                                                    size_mib, query_ms))
    print("\nquery ms = one `-q KEY` process per lookup (%d random keys): "
          "process start + open + one lookup." % args.queries)


if __name__ == "__main__":
    main()
