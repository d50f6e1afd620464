"""test_smtp_hostile - the smtp client against next hops that break the
protocol, and content that SMTP cannot carry as it is

A scripted SMTP server on loopback (ScriptServer, a plain socket server)
answers each command with what a test tells it: 250 to DATA, 354 to MAIL,
replies whose lines disagree, a reply sent ahead of its command. None of
that may count as delivered: the recipients are deferred (dsn 4.5.0,
"protocol error") and the message stays in the queue. The server keeps
every byte it receives, so a test can also check that a bare CR or a NUL
in a queued message never reaches the next hop as it is (RFC 5321 2.3.8).

Most tests play qmgr with test_smtp_agent's Agent; two run a whole
instance (smtpd or sendmail -> cleanup -> qmgr -> smtp) and watch the log
and the queue.
"""

import os
import re
import socket
import subprocess
import threading

import pytest

import qfile_reader
from conftest import (BIN, CMD_TIMEOUT, LIBEXEC, require, smtp_queue,
                      wait_until)
from test_smtp_agent import make_agent  # noqa: F401 (a fixture)

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "bounce")

BODY = (b"Subject: hostile test\n"
        b"From: sender@src.test\n"
        b"\n"
        b"hello\n")


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))


class ScriptServer:
    """An SMTP server on 127.0.0.1 that answers as told.

    greeting: bytes sent on connect. replies: {"EHLO"|"MAIL"|"RCPT"|"DATA"|
    "DOT"|"RSET"|"QUIT": bytes} instead of the ordinary reply; a list of
    bytes is sent a piece every 0.2s (a reply that trickles). After a
    reply to DATA that starts with 354 the content is read up to the
    ".\\r\\n" line and kept (messages); then DOT's reply. Every byte
    received on each connection is kept (raw)."""

    ORDINARY = {
        "EHLO": b"250-hostile.test\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n",
        "HELO": b"250 hostile.test\r\n",
        "MAIL": b"250 2.1.0 Ok\r\n",
        "RCPT": b"250 2.1.5 Ok\r\n",
        "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
        "DOT": b"250 2.0.0 Ok: queued\r\n",
        "RSET": b"250 2.0.0 Ok\r\n",
        "QUIT": b"221 2.0.0 Bye\r\n",
    }

    def __init__(self, greeting=b"220 hostile.test ESMTP\r\n", replies=None):
        self.greeting = greeting
        self.replies = dict(self.ORDINARY)
        self.replies.update(replies or {})
        self.raw = []               # bytes received, one entry per connection
        self.messages = []          # content between 354 and ".", raw
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._threads = [threading.Thread(target=self._run, daemon=True)]
        self._threads[0].start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.raw.append(bytearray())
                number = len(self.raw) - 1
            t = threading.Thread(target=self._serve, args=(conn, number),
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn, number):
        conn.settimeout(20)
        buf = bytearray()

        def line():
            while b"\n" not in buf:
                if self._stop.is_set():
                    return None
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                with self.lock:
                    self.raw[number].extend(chunk)
                buf.extend(chunk)
            end = buf.index(b"\n") + 1
            out = bytes(buf[:end])
            del buf[:end]
            return out

        try:
            conn.sendall(self.greeting)
            while True:
                raw = line()
                if raw is None:
                    return
                verb = raw.decode(errors="replace").split(" ")[0] \
                    .split(":")[0].strip().upper()
                reply = self.replies.get(verb, b"502 5.5.2 what?\r\n")
                if isinstance(reply, list):
                    for piece in reply:
                        if self._stop.wait(0.2):
                            return
                        conn.sendall(piece)
                    continue
                conn.sendall(reply)
                if verb == "DATA" and reply.startswith(b"354"):
                    data = bytearray()
                    while True:
                        raw = line()
                        if raw is None:
                            return
                        if raw == b".\r\n":
                            break
                        data += raw
                    with self.lock:
                        self.messages.append(bytes(data))
                    conn.sendall(self.replies["DOT"])
                if verb == "QUIT":
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def received(self):
        with self.lock:
            return [bytes(r) for r in self.raw]

    def stop(self):
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(timeout=25)


@pytest.fixture
def script_server():
    made = []

    def make(**kw):
        s = ScriptServer(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


# --- hostile replies, one state at a time -----------------------------------

# (name, greeting or None for the ordinary one, replies, words in the reason)
HOSTILE = [
    ("DATA answered 250", None,
     {"DATA": b"250 2.0.0 Ok: queued\r\n"},
     "unexpected reply to DATA command"),
    ("DATA answered 334", None,
     {"DATA": b"334 go on\r\n"},
     "unexpected reply to DATA command"),
    ("MAIL answered 354", None,
     {"MAIL": b"354 go ahead\r\n"},
     "unexpected reply to MAIL FROM command"),
    ("RCPT answered 354", None,
     {"RCPT": b"354 go ahead\r\n"},
     "unexpected reply to RCPT TO command"),
    ("end of data answered 354", None,
     {"DOT": b"354 more please\r\n"},
     "unexpected reply to end of DATA command"),
    ("end of data lines disagree", None,
     {"DOT": b"250-2.0.0 Ok\r\n550 5.7.1 no after all\r\n"},
     "malformed reply"),
    ("end of data answered ahead of the content", None,
     {"DATA": b"354 go\r\n250 2.0.0 Ok: queued\r\n"},
     "reply ahead of its command"),
    ("a stray reply after the greeting shifts every later one",
     b"220 hostile.test ESMTP\r\n250 stray\r\n", {},
     "reply ahead of its command"),
    ("code out of range", None,
     {"RCPT": b"199 2.1.5 Ok\r\n"},
     "malformed reply"),
    ("code not a number", None,
     {"MAIL": b"2x0 2.1.0 Ok\r\n"},
     "malformed reply"),
    ("reply line without an end", None,
     {"MAIL": b"250 " + b"x" * 10000},
     "reply line too long"),
]


@pytest.mark.parametrize("name,greeting,replies,words", HOSTILE,
                         ids=[h[0] for h in HOSTILE])
def test_hostile_reply_defers(make_agent, script_server, name, greeting,
                              replies, words):
    kw = {"replies": replies}
    if greeting is not None:
        kw["greeting"] = greeting
    server = script_server(**kw)
    agent = make_agent(smtp_connection_cache_time_limit="0")
    qid, offsets = agent.queue(["a@dest.test", "b@dest.test"], BODY)
    results, done = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % server.port)
    assert set(results) == {"a@dest.test", "b@dest.test"}
    for r in results.values():
        assert r["action"] == "deferred", (name, r)
        assert r["dsn"] == "4.5.0", (name, r)
        assert "protocol error" in r["reason"] and words in r["reason"], r
    assert "status=sent" not in agent.inst.log()
    agent.inst.wait_log(r"%s: to=<a@dest\.test>, .*dsn=4\.5\.0, "
                        r"status=deferred \(protocol error: " % qid)


def test_reply_that_never_ends_times_out(make_agent, script_server):
    """A reply whose lines keep coming, each before the last one ends,
    does not hold the delivery beyond the command's time limit."""
    server = script_server(replies={"MAIL": [b"250-still going\r\n"] * 60})
    agent = make_agent(smtp_mail_timeout="2s")
    qid, offsets = agent.queue(["a@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % server.port)
    r = results["a@dest.test"]
    assert r["action"] == "deferred", r
    assert "timed out while sending MAIL FROM" in r["reason"], r


def test_data_250_message_stays_queued(make_instance, script_server):
    """The whole way: a next hop that answers 250 to DATA gets nothing,
    so the message is deferred, logged so, and kept in deferred/."""
    server = script_server(replies={"DATA": b"250 2.0.0 Ok: queued\r\n"})
    inst = make_instance(relayhost="[127.0.0.1]:%d" % server.port, start=True,
                         params={"mynetworks": "127.0.0.0/8",
                                 "retry_schedule": "1h"})
    qid = smtp_queue(inst, "alice@example.test", ["bob@dest.test"],
                     b"Subject: x\r\n\r\nhello\r\n")
    inst.wait_log(r"%s: to=<bob@dest\.test>, .*dsn=4\.5\.0, status=deferred "
                  r"\(protocol error: host 127\.0\.0\.1\[127\.0\.0\.1\] said: "
                  r"250 2\.0\.0 Ok: queued \(unexpected reply to DATA command\)\)"
                  % qid, timeout=30)
    deferred = inst.queue_dir / "deferred"
    wait_until(lambda: any(p.name == qid for p in deferred.rglob("*")), 10,
               what="%s in deferred/" % qid)
    log = inst.log()
    assert not re.search(r"%s: to=<bob@dest\.test>.*status=sent" % qid, log), log
    assert not re.search(r"%s: removed" % qid, log), log
    assert server.messages == []


# --- bare CR and NUL in queued content ---------------------------------------

def wire_ok(data):
    """data has CR and LF only as CRLF and no NUL."""
    return (b"\0" not in data and
            data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"))


def put_in_queue_file(path, placeholders):
    """Rewrite bytes of the C records of a queue file in place, one for
    one ({b"~": b"\\r"}): a queue file with content that some path into
    the queue (an older smtpd or sendmail, another tool) let through,
    whatever today's input side refuses. Lengths and sizes stay valid."""
    data = bytearray(path.read_bytes())
    for rec in qfile_reader.records(data):
        if rec.type == "C":
            start = rec.offset + qfile_reader.HDR_LEN
            for i in range(start, start + len(rec.data)):
                data[i:i + 1] = placeholders.get(bytes(data[i:i + 1]),
                                                 data[i:i + 1])
    path.write_bytes(bytes(data))


def test_bare_cr_and_nul_never_reach_the_next_hop(make_agent, script_server):
    """A queued bare CR goes out as a line break in the body and as a
    space in the headers, a NUL not at all (smtp.h says why)."""
    server = script_server()
    agent = make_agent()
    body = (b"Subject: one~Bcc: injected@evil.test\n"
            b"X-Nul: a^b\n"
            b"\n"
            b"old mac~line~.~MAIL FROM:<x@evil.test>\n"
            b"nul^byte\n")
    qid, offsets = agent.queue(["a@dest.test"], body)
    put_in_queue_file(agent.inst.queue_dir / "active" / qid,
                      {b"~": b"\r", b"^": b"\0"})
    content = agent.content(qid)
    assert content.count(b"\r") == 4 and content.count(b"\0") == 2, content
    results, _ = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % server.port)
    assert results["a@dest.test"]["action"] == "sent"
    (got,) = server.messages
    assert wire_ok(b"".join(server.received())), server.received()
    lines = got.split(b"\r\n")
    assert b"Subject: one Bcc: injected@evil.test" in lines
    assert not any(l.startswith(b"Bcc:") for l in lines)
    assert b"X-Nul: ab" in lines
    assert [b"old mac", b"line", b"..", b"MAIL FROM:<x@evil.test>",
            b"nulbyte"] == lines[-6:-1]
    agent.inst.wait_log(r"%s: content to 127\.0\.0\.1\[127\.0\.0\.1\]: 2 NUL "
                        r"byte\(s\) removed, 4 bare CR\(s\)" % qid)


def test_bare_cr_and_nul_from_sendmail(make_instance, script_server):
    """The other way in: sendmail -> maildrop -> pickup -> cleanup -> qmgr ->
    smtp. Whatever sendmail lets into the queue, the next hop gets CRLF
    lines without NUL."""
    require(BIN / "sendmail", LIBEXEC / "pickup")
    server = script_server()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % server.port, start=True)
    env = dict(os.environ)
    env.pop("SLUICE_CONFIG", None)
    r = subprocess.run([str(BIN / "sendmail"), "-C", str(inst.dir),
                        "bob@dest.test"],
                       input=(b"Subject: cron\r\n\r\nout\rput\0 here\r\n"
                              b"bare lf\nend\r\r\n"),
                       capture_output=True, timeout=CMD_TIMEOUT, env=env)
    if r.returncode != 0:
        # The input side refuses such content now: it must say so.
        assert r.stderr.strip(), r
        return
    wait_until(lambda: server.messages, 30, what="the message at the next hop")
    (got,) = server.messages
    assert wire_ok(b"".join(server.received())), server.received()
    text = got.split(b"\r\n\r\n", 1)[1]
    assert re.fullmatch(rb"out\W*put\W*here\r\nbare lf\r\nend\r\n", text), got
