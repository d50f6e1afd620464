#!/usr/bin/python3
"""smtpgen - the benchmark's SMTP load generator, with per-message latency

smtp-source (Postfix) sends load cheaply but cannot say how long each
message waited for its 250. This generator runs SESSIONS parallel SMTP
sessions over asyncio; each sends messages one after another on the same
connection, pipelining MAIL FROM, RCPT TO and DATA in one write (RFC 2920),
and times every message from the moment its end-of-data "." is written to
the moment the server's reply arrives: the accept latency, which for a
durable MTA includes its fsync.

    smtpgen.py [-s SESSIONS] [-m MESSAGES] [-l SIZE] [-f FROM] [-t TO]
               [--starttls] HOST:PORT

--starttls: each session says STARTTLS after EHLO (the server's
certificate is not checked), then EHLO again, and sends over TLS; a server
that does not offer it fails the session.

prints one JSON object on stdout: messages (sent and answered 2xx),
errors, elapsed seconds (first connect to last reply), rate (messages /
elapsed), the latency percentiles p50 p90 p99 max in milliseconds, and
env_p50 env_p99: the time from writing MAIL+RCPT+DATA to the 354.
Its own CPU cost is measured by whoever runs it (bench.py reads the
child's rusage). Exits 1 when no message was accepted.
"""

import argparse
import asyncio
import json
import socket
import ssl
import sys
import time


class SmtpError(Exception):
    pass


def make_body(size, sender, rcpt):
    """A message of about size bytes of body under a few headers, with
    CRLF line ends, ending in the end-of-data line. No line starts with a
    dot, so no dot-stuffing is needed."""
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: bench\r\n"
            "Message-ID: <{id}@bench.test>\r\n\r\n" % (sender, rcpt))
    line = "x" * 76 + "\r\n"
    body = line * (size // len(line))
    rest = size - len(body)
    if rest > 2:
        body += "y" * (rest - 2) + "\r\n"
    return head, (body + ".\r\n").encode()


async def read_reply(reader):
    """One (possibly multi-line) SMTP reply: (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError("connection closed by server")
        if len(line) < 4 or line[3:4] != b"-":
            try:
                return int(line[:3]), line.decode(errors="replace").rstrip()
            except ValueError:
                raise SmtpError("bad reply %r" % line)


async def session(host, port, state, head, tail, envelope, latencies, env_lat,
                  tls=None):
    """One SMTP session sending messages while state['left'] > 0; over
    STARTTLS with the client context tls."""
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        code, text = await read_reply(reader)
        if code != 220:
            raise SmtpError("greeting: " + text)
        writer.write(b"EHLO gen.bench.test\r\n")
        code, text = await read_reply(reader)
        if code != 250:
            raise SmtpError("EHLO: " + text)
        if tls is not None:
            writer.write(b"STARTTLS\r\n")
            code, text = await read_reply(reader)
            if code != 220:
                raise SmtpError("STARTTLS: " + text)
            await writer.start_tls(tls)
            writer.write(b"EHLO gen.bench.test\r\n")
            code, text = await read_reply(reader)
            if code != 250:
                raise SmtpError("EHLO after STARTTLS: " + text)
        while state["left"] > 0:
            state["left"] -= 1
            n = state["next"]
            state["next"] += 1
            e0 = time.perf_counter()
            writer.write(envelope)
            codes = [(await read_reply(reader)) for _ in range(3)]
            env_lat.append(time.perf_counter() - e0)
            if [c for c, _ in codes] != [250, 250, 354]:
                state["errors"] += 1
                state["last_error"] = " / ".join(t for _, t in codes)
                if codes[2][0] == 354:      # DATA went through: end it
                    writer.write(b".\r\n")
                    await read_reply(reader)
                writer.write(b"RSET\r\n")
                await read_reply(reader)
                continue
            writer.write(head.format(id="%d.%d" % (state["run"], n)).encode() + tail)
            t0 = time.perf_counter()
            code, text = await read_reply(reader)
            t1 = time.perf_counter()
            if code // 100 == 2:
                latencies.append(t1 - t0)
            else:
                state["errors"] += 1
                state["last_error"] = text
        writer.write(b"QUIT\r\n")
        try:
            await read_reply(reader)
        except SmtpError:
            pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def percentile(sorted_values, p):
    """The p-th percentile (nearest rank) of a sorted list, or None."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1,
                   int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


async def run(host, port, sessions, messages, size, sender, rcpt,
              starttls=False):
    tls = None
    if starttls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    head, tail = make_body(size, sender, rcpt)
    envelope = ("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                % (sender, rcpt)).encode()
    state = {"left": messages, "next": 0, "errors": 0, "last_error": "",
             "run": int(time.time() * 1000) % 100000000}
    latencies, env_lat = [], []
    start = time.perf_counter()
    results = await asyncio.gather(
        *(session(host, port, state, head, tail, envelope, latencies, env_lat,
                  tls)
          for _ in range(max(1, min(sessions, messages)))),
        return_exceptions=True)
    elapsed = time.perf_counter() - start
    failed = [r for r in results if isinstance(r, BaseException)]
    latencies.sort()
    env_lat.sort()
    ms = lambda v: None if v is None else round(v * 1000.0, 3)
    return {
        "messages": len(latencies),
        "errors": state["errors"] + state["left"],
        "sessions_failed": len(failed),
        "last_error": state["last_error"] or (str(failed[0]) if failed else ""),
        "elapsed": round(elapsed, 4),
        "rate": round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50": ms(percentile(latencies, 50)),
        "p90": ms(percentile(latencies, 90)),
        "p99": ms(percentile(latencies, 99)),
        "max": ms(latencies[-1] if latencies else None),
        "env_p50": ms(percentile(env_lat, 50)),
        "env_p99": ms(percentile(env_lat, 99)),
    }


def main():
    ap = argparse.ArgumentParser(description="SMTP load generator with latency")
    ap.add_argument("-s", type=int, default=10, help="parallel sessions")
    ap.add_argument("-m", type=int, default=1000, help="messages in all")
    ap.add_argument("-l", type=int, default=2048, help="body size in bytes")
    ap.add_argument("-f", default="from@bench.test", help="envelope sender")
    ap.add_argument("-t", default="to@bench.test", help="recipient")
    ap.add_argument("--starttls", action="store_true",
                    help="send over STARTTLS")
    ap.add_argument("target", help="HOST:PORT")
    a = ap.parse_args()
    host, _, port = a.target.rpartition(":")
    out = asyncio.run(run(host or "127.0.0.1", int(port), a.s, a.m, a.l, a.f, a.t,
                          a.starttls))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if out["messages"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
