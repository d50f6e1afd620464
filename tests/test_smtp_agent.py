"""test_smtp_agent - the smtp delivery agent, driven the way qmgr drives it

Each test starts an instance without qmgr and plays qmgr itself: a message
is sent into the instance over SMTP, its queue file moved from incoming/
to active/, and a DELIVER request (global/deliver_proto.h) goes to
private/smtp with tests/proto.py. The agent delivers to real SMTP peers on
loopback (tests/sink.py) and, for MX tests, asks a real DNS server on
loopback (dnsmasq, tests/dns.py). No query leaves the machine.
"""

import os
import re
import smtplib
import socket
import threading
import time

import pytest

import qfile_reader
import proto
from conftest import LIBEXEC, free_port, require, wait_until
from sink import RawServer, Sink

SMTP_AGENT = LIBEXEC / "smtp"
# The greeting each side of the delivery protocol sends first.
HELLO = [("request", "hello"), ("protocol", "deliver"), ("version", "4")]
# The smtp agent's own HELLO also says it takes another request on the
# connection after DONE.
AGENT_HELLO = dict(HELLO, reuse="1")


@pytest.fixture(autouse=True)
def _built():
    require(SMTP_AGENT, LIBEXEC / "smtpd", LIBEXEC / "cleanup")


# --- the queue file --------------------------------------------------------

def qfile_records(data):
    """[(type, offset, data)] of a queue file."""
    return qfile_reader.records(data)


def qfile_content(data):
    return b"".join(d for t, _, d in qfile_records(data) if t == "C")


# --- playing qmgr ----------------------------------------------------------

class Agent:
    """An instance without qmgr, and the requests a test sends its smtp."""

    def __init__(self, inst):
        self.inst = inst
        self.socket = inst.queue_dir / "private" / "smtp"

    def queue(self, rcpts, body, sender="sender@src.test", options=()):
        """Send a message into the instance and move it to active/;
        returns (qid, {address: R record offset})."""
        client = smtplib.SMTP("127.0.0.1", self.inst.port, timeout=30)
        try:
            client.ehlo("client.test")
            code, _ = client.mail(sender, list(options))
            assert code == 250
            for r in rcpts:
                assert client.rcpt(r)[0] == 250
            # smtplib stuffs dots but leaves bytes' line ends alone
            code, text = client.data(body.replace(b"\n", b"\r\n"))
            assert code == 250, text
        finally:
            client.quit()
        qid = re.search(r"queued as (\S+)", text.decode()).group(1)
        incoming = self.inst.queue_dir / "incoming" / qid
        active = self.inst.queue_dir / "active" / qid
        wait_until(incoming.exists, 10, what="queue file in incoming/")
        os.rename(incoming, active)
        data = active.read_bytes()
        offsets = {}
        for rtype, offset, rdata in qfile_records(data):
            if rtype == "R":
                offsets[rdata.split(b"\0")[0].decode()] = offset
        return qid, offsets

    def content(self, qid):
        return qfile_content((self.inst.queue_dir / "active" / qid).read_bytes())

    def deliver(self, qid, offsets, nexthop, sender="sender@src.test",
                rcpt_extra=None, timeout=60):
        """Send one request; returns ({address: RESULT dict}, DONE dict)."""
        conn = proto.Conn.connect(self.socket, timeout=timeout)
        try:
            conn.send(HELLO)
            assert conn.recv() == AGENT_HELLO
            conn.send([("request", "deliver"), ("queue_name", "active"),
                       ("queue_id", qid), ("nexthop", nexthop),
                       ("sender", sender), ("active_usec", proto.now_usec()),
                       ("rcpt_count", len(offsets))])
            by_offset = {}
            for address, offset in offsets.items():
                pairs = [("request", "rcpt"), ("offset", offset),
                         ("address", address)]
                pairs += (rcpt_extra or {}).get(address, [])
                conn.send(pairs)
                by_offset[str(offset)] = address
            results = {}
            while True:
                reply = conn.recv()
                assert reply is not None, "agent closed before DONE"
                if reply["request"] == "done":
                    return results, reply
                assert reply["request"] == "result", reply
                address = by_offset[reply["offset"]]
                assert address not in results, "two RESULTs for " + address
                results[address] = reply
        finally:
            conn.close()


@pytest.fixture
def make_agent(make_instance):
    """make_agent(**params) -> a started Agent (instance without qmgr)."""
    def make(**params):
        inst = make_instance(params=params)
        if any(l.split()[:1] == ["qmgr"] for l in inst.master_cf.read_text().splitlines()):
            inst.remove_service("qmgr")
        assert "\nsmtp " in "\n" + inst.master_cf.read_text(), \
            "sluice init did not list the smtp agent in master.cf"
        inst.start()
        wait_until(lambda: (inst.queue_dir / "private" / "smtp").exists(), 10,
                   what="private/smtp")
        return Agent(inst)
    return make


@pytest.fixture
def peers():
    """Things with a stop() method, stopped after the test."""
    made = []
    yield made
    for p in made:
        p.stop()


class PipeServer:
    """A small ESMTP server that offers PIPELINING and DSN (aiosmtpd offers
    neither), records every command line and message, and notes whether
    RCPT and DATA were already on the wire when MAIL arrived. With
    drop_on_reuse it hangs up, without a reply, on the MAIL command of a
    second transaction over one connection (a cached connection that died)."""

    def __init__(self, host="127.0.0.1", drop_on_reuse=False):
        self.drop_on_reuse = drop_on_reuse
        self.commands = []
        self.messages = []          # (connection, mail, [rcpt], data)
        self.pipelined = []         # per MAIL: DATA already received?
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self._stop = threading.Event()
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
            self.connections += 1
            t = threading.Thread(target=self._serve,
                                 args=(conn, self.connections), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn, number):
        conn.settimeout(30)
        buf = bytearray()

        def line():
            while b"\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buf.extend(chunk)
            end = buf.index(b"\n") + 1
            out = bytes(buf[:end])
            del buf[:end]
            return out

        try:
            conn.sendall(b"220 pipe.test ESMTP\r\n")
            mail, rcpts, txns = None, [], 0
            while True:
                raw = line()
                if raw is None:
                    return
                cmd = raw.decode(errors="replace").rstrip("\r\n")
                verb = cmd.split(" ")[0].split(":")[0].upper()
                with self.lock:
                    self.commands.append((number, cmd))
                if verb == "EHLO":
                    conn.sendall(b"250-pipe.test\r\n250-PIPELINING\r\n"
                                 b"250-DSN\r\n250-8BITMIME\r\n"
                                 b"250 SIZE 1000000\r\n")
                elif verb == "MAIL":
                    if self.drop_on_reuse and txns >= 1:
                        return
                    time.sleep(0.2)   # let a pipelined group arrive whole
                    try:
                        conn.settimeout(0.01)
                        buf.extend(conn.recv(65536))
                    except (socket.timeout, BlockingIOError):
                        pass
                    finally:
                        conn.settimeout(30)
                    with self.lock:
                        self.pipelined.append(b"DATA\r\n" in buf)
                    mail, rcpts = cmd, []
                    conn.sendall(b"250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    rcpts.append(cmd)
                    conn.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == "DATA":
                    conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    data = bytearray()
                    while True:
                        raw = line()
                        if raw is None:
                            return
                        if raw == b".\r\n":
                            break
                        data += raw
                    txns += 1
                    with self.lock:
                        self.messages.append((number, mail, rcpts, bytes(data)))
                    conn.sendall(b"250 2.0.0 Ok: queued\r\n")
                elif verb == "RSET":
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    conn.sendall(b"502 5.5.2 Error: command not recognized\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(timeout=5)


BODY = (b"Subject: agent test\n"
        b"From: sender@src.test\n"
        b"\n"
        b"first line\n"
        b".\n"
        b"..two dots\n"
        b".leading dot\n"
        b"trailing dot.\n"
        b"last line\n")


def dns_params(dns_server, **extra):
    params = {"disable_dns_lookups": "no", "dns_servers": dns_server,
              "smtp_dns_timeout": "10s"}
    params.update(extra)
    return params


# --- content and results ---------------------------------------------------

def test_content_byte_exact_with_8bit_and_dots(make_agent, peers):
    sink = Sink()
    peers.append(sink)
    agent = make_agent()
    body = BODY + "caf\u00e9 \u00fcber\n".encode()
    qid, offsets = agent.queue(["a@dest.test", "b@dest.test"], body,
                               options=["BODY=8BITMIME"])
    content = agent.content(qid)
    results, done = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    assert done["status"] == "0" and done["site_failed"] == "0"
    for address in offsets:
        assert results[address]["action"] == "sent"
        assert results[address]["dsn"] == "2.0.0"
        assert results[address]["relay"] == "127.0.0.1[127.0.0.1]:%d" % sink.port
        assert results[address]["reason"].startswith("250 ")
    (msg,) = sink.wait_messages(1)
    assert msg.mail_from == "sender@src.test"
    assert sorted(msg.rcpt_tos) == ["a@dest.test", "b@dest.test"]
    assert "BODY=8BITMIME" in msg.mail_options
    assert "SIZE=%d" % len(content) in msg.mail_options
    # byte-exact: the queue file's content, with CRLF line ends
    assert msg.data == content.replace(b"\n", b"\r\n")
    assert b"\r\n.\r\n..two dots\r\n.leading dot\r\n" in msg.data
    assert "caf\u00e9 \u00fcber".encode() in msg.data


def test_per_recipient_550_and_451(make_agent, peers):
    sink = Sink(rcpt_replies={"bad": "550 5.1.1 no such user",
                              "later": "451 4.3.0 try again later"})
    peers.append(sink)
    agent = make_agent()
    qid, offsets = agent.queue(["good@dest.test", "bad@dest.test",
                                "later@dest.test"], BODY)
    results, done = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    assert done["status"] == "0" and done["site_failed"] == "0"
    assert results["good@dest.test"]["action"] == "sent"
    bad = results["bad@dest.test"]
    assert bad["action"] == "bounced" and bad["dsn"] == "5.1.1"
    assert bad["reason"] == ("host 127.0.0.1[127.0.0.1] said: 550 5.1.1 no such "
                             "user (in reply to RCPT TO command)")
    assert bad["diagnostic"] == "smtp; 550 5.1.1 no such user"
    assert bad["remote_mta"] == "dns; 127.0.0.1"
    later = results["later@dest.test"]
    assert later["action"] == "deferred" and later["dsn"] == "4.3.0"
    assert "451 4.3.0 try again later" in later["reason"]
    (msg,) = sink.wait_messages(1)
    assert msg.rcpt_tos == ["good@dest.test"]


def test_soft_bounce_turns_550_into_deferred(make_agent, peers):
    sink = Sink(rcpt_replies={"bad": "550 5.1.1 no such user"})
    peers.append(sink)
    agent = make_agent(soft_bounce="yes")
    qid, offsets = agent.queue(["bad@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    assert results["bad@dest.test"]["action"] == "deferred"
    assert results["bad@dest.test"]["dsn"] == "4.1.1"


def test_data_4xx_defers_every_accepted_recipient(make_agent, peers):
    sink = Sink(data_reply="451 4.3.2 not now")
    peers.append(sink)
    agent = make_agent()
    qid, offsets = agent.queue(["a@dest.test", "b@dest.test"], BODY)
    results, done = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    assert done["status"] == "0"
    for r in results.values():
        assert r["action"] == "deferred" and r["dsn"] == "4.3.2"
        assert r["reason"].endswith("451 4.3.2 not now (in reply to end of "
                                    "DATA command)")
    assert len(results) == 2


def test_eight_bit_to_server_without_8bitmime_bounces(make_agent, peers):
    sink = Sink(eight_bit=False)
    peers.append(sink)
    agent = make_agent()
    qid, offsets = agent.queue(["a@dest.test"], BODY + b"\xe9t\xe9\n",
                               options=["BODY=8BITMIME"])
    results, _ = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    r = results["a@dest.test"]
    assert r["action"] == "bounced" and r["dsn"] == "5.6.3"
    assert "8-bit content" in r["reason"] and "8BITMIME" in r["reason"]
    assert sink.received() == []
    # 7-bit content goes through the same server
    qid, offsets = agent.queue(["b@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    assert results["b@dest.test"]["action"] == "sent"


def test_protocol_version_mismatch(make_agent):
    """The agent greets first with the protocol's name and version; a qmgr
    that greets with another version gets a clear error in the log and the
    connection closed, no delivery."""
    agent = make_agent()
    conn = proto.Conn.connect(agent.socket, timeout=30)
    try:
        assert conn.recv() == AGENT_HELLO
        conn.send([("request", "hello"), ("protocol", "deliver"),
                   ("version", "5")])
        assert conn.recv() is None
    finally:
        conn.close()
    agent.inst.wait_log(r"sluice/smtp\[\d+\]: warning: qmgr connection: "
                        r"protocol mismatch: peer speaks deliver version 5; "
                        r"this side speaks deliver version 4$")


def test_request_outside_the_queue(make_agent):
    """A queue ID or queue name that is not one is refused before it
    reaches a path (one check, in the shared request reader)."""
    agent = make_agent()
    for name, qid, why in (("active", "../../etc/passwd",
                            r'bad queue_id "\.\./\.\./etc/passwd"'),
                           ("private", "0123456789ABCDEF",
                            r'bad queue_name "private"')):
        conn = proto.Conn.connect(agent.socket, timeout=30)
        try:
            assert conn.recv() == AGENT_HELLO
            conn.send(HELLO)
            conn.send([("request", "deliver"), ("queue_name", name),
                       ("queue_id", qid), ("nexthop", "[127.0.0.1]:25"),
                       ("sender", ""), ("active_usec", proto.now_usec()),
                       ("rcpt_count", 1)])
            assert conn.recv() is None
        finally:
            conn.close()
        agent.inst.wait_log(r"warning: qmgr connection: %s$" % why)


def test_log_line_format(make_agent, peers):
    sink = Sink(rcpt_replies={"bad": "550 5.1.1 no such user"})
    peers.append(sink)
    agent = make_agent()
    qid, offsets = agent.queue(["ok@dest.test", "bad@dest.test"], BODY)
    agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    num = r"\d+(\.\d+)?"
    relay = r"127\.0\.0\.1\[127\.0\.0\.1\]:%d" % sink.port
    agent.inst.wait_log(
        r"sluice/smtp\[\d+\]: %s: to=<ok@dest\.test>, relay=%s, delay=%s, "
        r"delays=%s/%s/%s/%s, dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued\)$"
        % (qid, relay, num, num, num, num, num))
    agent.inst.wait_log(
        r"%s: to=<bad@dest\.test>, relay=%s, delay=%s, delays=%s/%s/%s/%s, "
        r"dsn=5\.1\.1, status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: "
        r"550 5\.1\.1 no such user \(in reply to RCPT TO command\)\), "
        r"category=user_unknown$"
        % (qid, relay, num, num, num, num, num))


# --- connections -----------------------------------------------------------

def test_connection_reuse_within_cache_time(make_agent, peers):
    sink = Sink()
    peers.append(sink)
    agent = make_agent(smtp_connection_cache_time_limit="5s")
    hop = "[127.0.0.1]:%d" % sink.port
    for n in range(3):
        qid, offsets = agent.queue(["r%d@dest.test" % n], BODY)
        results, _ = agent.deliver(qid, offsets, hop)
        assert results["r%d@dest.test" % n]["action"] == "sent"
    msgs = sink.wait_messages(3)
    assert [m.connection for m in msgs] == [1, 1, 1], msgs


def test_no_reuse_after_the_cache_time(make_agent, peers):
    sink = Sink()
    peers.append(sink)
    agent = make_agent(smtp_connection_cache_time_limit="1s")
    hop = "[127.0.0.1]:%d" % sink.port
    qid, offsets = agent.queue(["a@dest.test"], BODY)
    agent.deliver(qid, offsets, hop)
    time.sleep(2.5)   # the idle connection expires (QUIT); a new one follows
    qid, offsets = agent.queue(["b@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, hop)
    assert results["b@dest.test"]["action"] == "sent"
    assert [m.connection for m in sink.wait_messages(2)] == [1, 2]


def test_stalled_server_is_deferred_after_helo_timeout(make_agent, peers):
    raw = RawServer(greeting=None)
    peers.append(raw)
    agent = make_agent(smtp_helo_timeout="2s")
    qid, offsets = agent.queue(["a@dest.test"], BODY)
    start = time.monotonic()
    results, done = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % raw.port)
    assert time.monotonic() - start < 30
    r = results["a@dest.test"]
    assert r["action"] == "deferred"
    assert "timed out while receiving the initial server greeting" in r["reason"]
    assert done["site_failed"] == "1"


def test_connection_refused_is_deferred(make_agent):
    agent = make_agent()
    port = free_port()
    qid, offsets = agent.queue(["a@dest.test"], BODY)
    results, done = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % port)
    r = results["a@dest.test"]
    assert r["action"] == "deferred" and r["dsn"] == "4.4.1"
    assert r["reason"] == ("connect to 127.0.0.1[127.0.0.1]:%d: Connection "
                           "refused" % port)
    assert done["site_failed"] == "1"
    agent.inst.wait_log(r"connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: "
                        r"Connection refused" % port)


def test_dns_disabled_defers(make_agent):
    agent = make_agent()   # sluice init: disable_dns_lookups = yes
    qid, offsets = agent.queue(["a@dest.test"], BODY)
    results, done = agent.deliver(qid, offsets, "dest.test")
    r = results["a@dest.test"]
    assert r["action"] == "deferred"
    assert "DNS lookups are disabled" in r["reason"]
    assert done["site_failed"] == "1"


# --- DNS -------------------------------------------------------------------

def test_connection_refused_then_next_mx(make_agent, make_dns, peers):
    sink = Sink()
    peers.append(sink)
    dns = make_dns(mx=[("a.test", "mx1.a.test", 10), ("a.test", "mx2.a.test", 20)],
                   a=[("mx1.a.test", "127.0.0.2"), ("mx2.a.test", "127.0.0.1")])
    agent = make_agent(**dns_params(dns.server, smtp_tcp_port=str(sink.port)))
    qid, offsets = agent.queue(["x@a.test"], BODY)
    results, done = agent.deliver(qid, offsets, "a.test")
    r = results["x@a.test"]
    assert r["action"] == "sent", r
    assert r["relay"] == "mx2.a.test[127.0.0.1]:%d" % sink.port
    assert done["site_failed"] == "0"
    agent.inst.wait_log(r"connect to mx1\.a\.test\[127\.0\.0\.2\]:%d: "
                        r"Connection refused" % sink.port)
    assert len(sink.wait_messages(1)) == 1


def test_421_greeting_then_next_mx(make_agent, make_dns, peers):
    sink = Sink()
    peers.append(sink)
    busy = RawServer(b"421 4.3.2 busy, try later\r\n", host="127.0.0.3",
                     port=sink.port)
    peers.append(busy)
    dns = make_dns(mx=[("b.test", "mx1.b.test", 5), ("b.test", "mx2.b.test", 50)],
                   a=[("mx1.b.test", "127.0.0.3"), ("mx2.b.test", "127.0.0.1")])
    agent = make_agent(**dns_params(dns.server, smtp_tcp_port=str(sink.port)))
    qid, offsets = agent.queue(["x@b.test"], BODY)
    results, _ = agent.deliver(qid, offsets, "b.test")
    assert results["x@b.test"]["action"] == "sent"
    assert busy.connections == 1
    agent.inst.wait_log(r"host mx1\.b\.test\[127\.0\.0\.3\] refused to talk to "
                        r"me: 421 4\.3\.2 busy, try later")


def test_mx_preference_order(make_agent, make_dns, peers):
    low = Sink(host="127.0.0.1")
    peers.append(low)
    high = Sink(host="127.0.0.4", port=low.port)
    peers.append(high)
    dns = make_dns(mx=[("c.test", "far.c.test", 30), ("c.test", "near.c.test", 10)],
                   a=[("far.c.test", "127.0.0.4"), ("near.c.test", "127.0.0.1")])
    agent = make_agent(**dns_params(dns.server, smtp_tcp_port=str(low.port),
                                    smtp_connection_cache_time_limit="0"))
    for n in range(3):
        qid, offsets = agent.queue(["p%d@c.test" % n], BODY)
        results, _ = agent.deliver(qid, offsets, "c.test")
        assert results["p%d@c.test" % n]["relay"] == \
            "near.c.test[127.0.0.1]:%d" % low.port
    assert len(low.wait_messages(3)) == 3
    assert high.received() == []
    # the preferred one down: the other takes the mail
    low.stop()
    qid, offsets = agent.queue(["q@c.test"], BODY)
    results, _ = agent.deliver(qid, offsets, "c.test")
    assert results["q@c.test"]["relay"] == "far.c.test[127.0.0.4]:%d" % low.port
    assert len(high.wait_messages(1)) == 1


def test_domain_without_mx_uses_its_address(make_agent, make_dns, peers):
    sink = Sink()
    peers.append(sink)
    dns = make_dns(a=[("plain.test", "127.0.0.1")])
    agent = make_agent(**dns_params(dns.server, smtp_tcp_port=str(sink.port)))
    qid, offsets = agent.queue(["x@plain.test"], BODY)
    results, _ = agent.deliver(qid, offsets, "plain.test")
    assert results["x@plain.test"]["action"] == "sent"
    assert results["x@plain.test"]["relay"] == "plain.test[127.0.0.1]:%d" % sink.port


def test_null_mx_bounces(make_agent, make_dns):
    dns = make_dns(rr=[("nullmx.test", 15, "000000")])
    agent = make_agent(**dns_params(dns.server))
    qid, offsets = agent.queue(["x@nullmx.test"], BODY)
    results, done = agent.deliver(qid, offsets, "nullmx.test")
    r = results["x@nullmx.test"]
    assert r["action"] == "bounced" and r["dsn"] == "5.1.10"
    assert r["reason"] == "nullmx.test: null MX: domain accepts no mail"
    assert done["site_failed"] == "1"


def test_nxdomain_bounces(make_agent, make_dns):
    dns = make_dns(a=[("exists.test", "127.0.0.1")])
    agent = make_agent(**dns_params(dns.server))
    qid, offsets = agent.queue(["x@nosuch.test"], BODY)
    results, _ = agent.deliver(qid, offsets, "nosuch.test")
    r = results["x@nosuch.test"]
    assert r["action"] == "bounced" and r["dsn"] == "5.1.2"
    assert "Host or domain name not found" in r["reason"]


def test_dns_timeout_defers_never_bounces(make_agent, peers):
    import dns
    silent = dns.Silent()
    peers.append(silent)
    agent = make_agent(**dns_params(silent.server, smtp_dns_timeout="2s"))
    qid, offsets = agent.queue(["x@slow.test"], BODY)
    start = time.monotonic()
    results, done = agent.deliver(qid, offsets, "slow.test")
    assert time.monotonic() - start < 20
    r = results["x@slow.test"]
    assert r["action"] == "deferred" and r["dsn"].startswith("4.")
    assert done["site_failed"] == "1"


# --- ESMTP extensions and reuse failures -----------------------------------

def test_pipelining_and_dsn_pass_through(make_agent, peers):
    server = PipeServer()
    peers.append(server)
    agent = make_agent()
    qid, offsets = agent.queue(["a@dest.test", "b@dest.test"], BODY,
                               options=["RET=HDRS", "ENVID=env+3Did"])
    extra = {"a@dest.test": [("notify", "SUCCESS,FAILURE"),
                             ("orcpt", "rfc822;a+40dest.test")]}
    results, done = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % server.port,
                                  rcpt_extra=extra)
    assert all(r["action"] == "sent" for r in results.values()), results
    assert server.pipelined == [True]
    (number, mail, rcpts, data), = server.messages
    assert mail.startswith("MAIL FROM:<sender@src.test> SIZE=")
    assert " RET=HDRS" in mail and " ENVID=env+3Did" in mail
    assert "RCPT TO:<a@dest.test> NOTIFY=SUCCESS,FAILURE " \
           "ORCPT=rfc822;a+40dest.test" in rcpts
    assert "RCPT TO:<b@dest.test>" in rcpts
    assert data == agent.content(qid).replace(b"\n", b"\r\n").replace(
        b"\r\n.", b"\r\n..")


def test_dead_cached_connection_is_replaced(make_agent, peers):
    server = PipeServer(drop_on_reuse=True)
    peers.append(server)
    agent = make_agent(smtp_connection_cache_time_limit="10s")
    hop = "[127.0.0.1]:%d" % server.port
    qid, offsets = agent.queue(["a@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, hop)
    assert results["a@dest.test"]["action"] == "sent"
    # the second request takes the cached connection, which dies at MAIL:
    # the agent connects afresh and the delivery does not fail
    qid, offsets = agent.queue(["b@dest.test"], BODY)
    results, _ = agent.deliver(qid, offsets, hop)
    assert results["b@dest.test"]["action"] == "sent", results
    assert [m[0] for m in server.messages] == [1, 2]
    assert server.connections == 2


def test_no_rset_after_a_delivered_message(make_agent, peers):
    """A transaction that ended with a 250 to the end of data leaves none
    open, so the next MAIL on the kept connection follows at once, with no
    RSET round trip between (RFC 5321 4.1.4; Postfix sends RSET only to
    probe a connection it takes from its cache): three deliveries on one
    connection, its commands MAIL, RCPT, DATA three times and no RSET."""
    server = PipeServer()
    peers.append(server)
    agent = make_agent(smtp_connection_cache_time_limit="10s")
    hop = "[127.0.0.1]:%d" % server.port
    for n in range(3):
        qid, offsets = agent.queue(["r%d@dest.test" % n], BODY)
        results, _ = agent.deliver(qid, offsets, hop)
        assert results["r%d@dest.test" % n]["action"] == "sent", results
    assert [m[0] for m in server.messages] == [1, 1, 1]
    assert server.connections == 1
    with server.lock:
        verbs = [cmd.split(" ")[0].split(":")[0].upper()
                 for number, cmd in server.commands if number == 1]
    assert verbs == ["EHLO"] + ["MAIL", "RCPT", "DATA"] * 3, verbs


def test_reuse_count_limit(make_agent, peers):
    sink = Sink()
    peers.append(sink)
    agent = make_agent(smtp_connection_cache_time_limit="10s",
                       smtp_connection_reuse_count_limit="2")
    hop = "[127.0.0.1]:%d" % sink.port
    for n in range(3):
        qid, offsets = agent.queue(["r%d@dest.test" % n], BODY)
        agent.deliver(qid, offsets, hop)
    assert [m.connection for m in sink.wait_messages(3)] == [1, 1, 2]


def test_large_message_streams_byte_exact(make_agent, peers):
    sink = Sink()
    peers.append(sink)
    agent = make_agent()
    line = b"x" * 70 + b"\n"
    body = BODY + b"".join(b"%07d " % n + line + (b"." + line if n % 97 == 0 else b"")
                           for n in range(40000))
    qid, offsets = agent.queue(["big@dest.test"], body)
    content = agent.content(qid)
    assert len(content) > 3_000_000
    results, _ = agent.deliver(qid, offsets, "[127.0.0.1]:%d" % sink.port)
    assert results["big@dest.test"]["action"] == "sent"
    (msg,) = sink.wait_messages(1)
    assert msg.data == content.replace(b"\n", b"\r\n")


def test_one_process_serves_concurrent_requests(make_agent, peers):
    sink = Sink(data_delay=1)
    peers.append(sink)
    agent = make_agent()
    hop = "[127.0.0.1]:%d" % sink.port
    jobs = [agent.queue(["c%d@dest.test" % n], BODY) for n in range(8)]
    outcomes = [None] * len(jobs)

    def run(n):
        outcomes[n] = agent.deliver(jobs[n][0], jobs[n][1], hop)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for n, (results, done) in enumerate(outcomes):
        assert results["c%d@dest.test" % n]["action"] == "sent"
    msgs = sink.wait_messages(len(jobs))
    # every request got its own connection while the others were in flight
    assert len({m.connection for m in msgs}) >= 2
    pids = set(agent.inst.wait_log(r"sluice/smtp\[(\d+)\]: \S+: to=<c\d@",
                                   count=len(jobs))[0].re.findall(agent.inst.log()))
    assert len(pids) == 1, pids
