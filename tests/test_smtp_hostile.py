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

import re
import socket
import threading

import pytest

from conftest import LIBEXEC, require, wait_until
from test_smtp_agent import Agent, make_agent  # noqa: F401 (a fixture)

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
    "DOT"|"RSET"|"QUIT": bytes} instead of the ordinary reply. After a
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


def test_data_250_message_stays_queued(make_instance, script_server):
    """The whole way: a next hop that answers 250 to DATA gets nothing,
    so the message is deferred, logged so, and kept in deferred/."""
    server = script_server(replies={"DATA": b"250 2.0.0 Ok: queued\r\n"})
    inst = make_instance(relayhost="[127.0.0.1]:%d" % server.port, start=True,
                         params={"mynetworks": "127.0.0.0/8",
                                 "retry_schedule": "1h"})
    from conftest import smtp_queue
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
