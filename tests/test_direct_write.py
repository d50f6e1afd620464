"""test_direct_write - replies and commands written straight to the socket

smtpd's replies and smtp's commands and content go straight to a plain
socket when nothing is queued (global/bev_direct.h); only what the kernel
does not take is queued in libevent. These tests make the kernel refuse
part of a write (a peer that does not read), so the direct write is
partial, the rest is queued, and later writes must queue behind it: every
byte must still arrive, once, in order, and the sessions must go on.
"""

import socket
import threading
import time

import pytest

from conftest import LIBEXEC, free_port, require, wait_until

EHLO_CMD = b"EHLO client.test\r\n"
HELO_CMD = b"HELO client.test\r\n"
# Enough replies to exceed any loopback socket buffer (tcp_wmem's maximum
# is 4 MB on Debian): the server's writes must become partial.
PAIRS = 40000


@pytest.fixture(autouse=True)
def _built():
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup", LIBEXEC / "smtp")


def _read_until_eof(sock, deadline):
    data = bytearray()
    while time.monotonic() < deadline:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("no EOF after %d bytes" % len(data))


def test_pipelined_commands_while_replies_are_stuck(make_instance):
    """A client pipelines 80,000 commands and reads nothing until it has
    sent them all: smtpd's replies fill the socket, its direct writes go
    partial and queue, it stops reading (output_full) and resumes when the
    client reads. Every reply comes, in order, a message in the same
    pipeline is queued, and QUIT's 221 comes last before the close."""
    inst = make_instance(params={"mynetworks": "127.0.0.1/32",
                                 "myhostname": "mx.test"}, start=True)
    sock = socket.socket()
    # Set before connecting (a buffer shrunk later stalls the window).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", inst.port))
    greeting = sock.recv(4096)
    assert greeting.startswith(b"220 ")
    commands = (EHLO_CMD + HELO_CMD) * PAIRS + (
        b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b@localhost>\r\nDATA\r\n"
        b"Subject: after the backlog\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    sent = threading.Event()

    def send_all():
        sock.sendall(commands)
        sent.set()

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    # The replies pile up until smtpd stops reading and the commands back
    # up too: the sender blocks. Give it a few seconds to get there (or to
    # finish, on a fast machine with big buffers), then read.
    sent.wait(3)
    data = _read_until_eof(sock, time.monotonic() + 120)
    sender.join(30)
    assert sent.is_set()
    sock.close()
    lines = data.split(b"\r\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    # Each EHLO: 250-... lines and a last "250 "; each HELO one "250 ".
    i = 0
    for n in range(PAIRS):
        assert lines[i].startswith(b"250-mx.test"), (n, lines[i])
        while lines[i].startswith(b"250-"):
            i += 1
        assert lines[i].startswith(b"250 "), (n, lines[i])
        i += 1
        assert lines[i] == b"250 mx.test", (n, lines[i])
        i += 1
    tail = lines[i:]
    assert [t[:3] for t in tail] == [b"250", b"250", b"354", b"250",
                                     b"221"], tail
    assert b"queued as" in tail[3]
    qid = tail[3].split()[-1].decode()
    inst.wait_log(r"%s: removed|%s: to=<b@localhost>" % (qid, qid),
                  timeout=30)


class SlowReader:
    """An SMTP server that, after its 354, reads nothing for a while: the
    smtp client's content writes go partial and queue, and libevent's
    write callback must bring the rest. It keeps the whole DATA."""

    def __init__(self, pause=1.5):
        self.port = free_port()
        self.pause = pause
        self.data = None
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by the accepted socket (set before the handshake).
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(4)
        self.listener.settimeout(60)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn, _ = self.listener.accept()
        conn.settimeout(60)
        buf = bytearray()

        def line():
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    raise EOFError
                buf.extend(chunk)
            end = buf.index(b"\r\n")
            out = bytes(buf[:end])
            del buf[:end + 2]
            return out

        conn.sendall(b"220 slow.test ESMTP\r\n")
        try:
            while True:
                cmd = line().upper()
                if cmd.startswith(b"EHLO"):
                    conn.sendall(b"250-slow.test\r\n250 PIPELINING\r\n")
                elif cmd.startswith(b"DATA"):
                    conn.sendall(b"354 go on\r\n")
                    time.sleep(self.pause)
                    while b"\r\n.\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            raise EOFError
                        buf.extend(chunk)
                    end = buf.index(b"\r\n.\r\n")
                    self.data = bytes(buf[:end + 2])
                    del buf[:end + 5]
                    conn.sendall(b"250 2.0.0 kept\r\n")
                elif cmd.startswith(b"QUIT"):
                    conn.sendall(b"221 bye\r\n")
                    break
                else:
                    conn.sendall(b"250 ok\r\n")
        except (EOFError, OSError):
            pass
        conn.close()

    def stop(self):
        self.listener.close()
        self.thread.join(10)


def test_large_content_to_a_server_that_reads_late(make_instance):
    """8 MB of numbered lines, some starting with a dot, to a server that
    reads nothing for 1.5 s after its 354: smtp's direct writes go partial,
    the rest is queued and the write callback pushes the rest. The server
    gets every line once, in order, dot-stuffed."""
    server = SlowReader()
    try:
        inst = make_instance(relayhost="[127.0.0.1]:%d" % server.port,
                             params={"mynetworks": "127.0.0.1/32",
                                     "message_size_limit": "0"},
                             start=True)
        body_lines = [b"%s%07d the quick brown fox jumps over the dog" %
                      (b"." if n % 97 == 0 else b"", n)
                      for n in range(160000)]
        sock = socket.create_connection(("127.0.0.1", inst.port), timeout=60)
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220")
        sock.sendall(b"EHLO client.test\r\nMAIL FROM:<a@src.test>\r\n"
                     b"RCPT TO:<b@far.test>\r\nDATA\r\n")
        codes = []
        while len(codes) < 3 or not codes[-1].startswith(b"354"):
            reply = f.readline()
            if not reply.startswith(b"250-"):
                codes.append(reply)
        sock.sendall(b"Subject: big\r\n\r\n")
        for n in range(0, len(body_lines), 5000):
            part = body_lines[n:n + 5000]
            sock.sendall(b"".join((b"." + ln if ln.startswith(b".") else ln)
                                  + b"\r\n" for ln in part))
        sock.sendall(b".\r\nQUIT\r\n")
        assert f.readline().startswith(b"250")
        sock.close()
        wait_until(lambda: server.data is not None, timeout=120,
                   what="the message at the slow server")
        got = server.data.split(b"\r\n")
        assert got[-1] == b""
        start = got.index(b"") + 1  # the end of the headers
        sent = [b"." + ln if ln.startswith(b".") else ln for ln in body_lines]
        assert got[start:-1] == sent
        inst.wait_log(r"to=<b@far.test>.*status=sent", timeout=30)
    finally:
        server.stop()
