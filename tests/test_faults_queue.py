"""test_faults_queue - cut queue files, stalled and lying peers, a failing
DNS server (issue 6 item 4)

Queue files: a real queue file (made by an instance without qmgr) is cut at
every record boundary of global/qfile.h, at a few offsets inside records,
and replaced by garbage; each copy is dropped into a running instance's
incoming/ under a fresh queue ID. qmgr must move each one to corrupt/ with a
warning in maillog, deliver the one whole copy, and keep delivering mail
sent afterwards.

Peers: a server that takes the whole message and never answers the final
dot (smtp_data_done_timeout frees the connection, the message is deferred,
and delivered by `sluice flush` once a real server listens there); servers
that answer garbage instead of a greeting (deferred with a reason, no daemon
dies); a DNS server that answers SERVFAIL to everything (deferred with
4.4.3, never bounced, no DSN).

Every peer listens on loopback; nothing here asks this machine's resolver.
"""

import re
import socket
import struct
import threading
import time

import pytest

import qfile_reader
from conftest import LIBEXEC, require, smtp_queue, wait_until
from sink import RawServer

DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "bounce")
QID_CHARS = "0123456789ABCDEFGHJKLMNPQRSTVWXY"
# maillog lines that mean a daemon died or gave up instead of handling a fault
DEATH = re.compile(r"killed by signal|panic:|fatal:|exit status [1-9]")


@pytest.fixture(autouse=True)
def _built():
    require(*(LIBEXEC / d for d in DAEMONS))


def send(inst, rcpts, sender="alice@example.test", body=None):
    """Send one message into inst over SMTP; return its queue ID."""
    if body is None:
        body = (b"Subject: fault\r\nMessage-ID: <%d@example.test>\r\n\r\n"
                b"hello\r\n" % time.monotonic_ns())
    return smtp_queue(inst, sender, rcpts, body)


def queue_files(inst, queue):
    """Queue IDs in one queue directory (hashed or not)."""
    top = inst.queue_dir / queue
    return sorted(p.name for p in top.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def relay_instance(make_instance, port, **params):
    """A started instance that sends everything to 127.0.0.1:port."""
    base = {"mynetworks": "127.0.0.0/8"}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % port, start=True,
                         params=base)


def no_deaths(inst):
    dead = [l for l in inst.log().splitlines() if DEATH.search(l)]
    assert not dead, "daemons died or gave up:\n" + "\n".join(dead)


# --- 1. queue files cut at every record boundary ---------------------------

def qfile_boundaries(data):
    """Offsets where each record of a queue file starts, and its end."""
    return qfile_reader.boundaries(data)


def qid_variant(qid, n):
    """qid with its last 4 characters (part of the pid field) replaced by n
    in base 32: another valid queue ID, same arrival time."""
    tail = ""
    for _ in range(4):
        tail = QID_CHARS[n % 32] + tail
        n //= 32
    return qid[:-4] + tail


def real_queue_file(make_instance):
    """The bytes of a queue file as cleanup writes it (two recipients, some
    attributes, content in several records), and its queue ID."""
    inst = make_instance(params={"mynetworks": "127.0.0.0/8"})
    inst.remove_service("qmgr")
    inst.start()
    body = (b"From: alice@example.test\r\nSubject: to be cut\r\n\r\n"
            + b"a line of the body\r\n" * 300)
    qid = send(inst, ["bob@dest.test", "carol@dest.test"], body=body)
    path = inst.queue_dir / "incoming" / qid
    wait_until(path.exists, 10, what="queue file in incoming/")
    data = path.read_bytes()
    inst.stop()
    return qid, data


def drop(inst, qid, data):
    """Put data into inst's incoming/ as qid, atomically."""
    incoming = inst.queue_dir / "incoming"
    tmp = incoming / (".tmp." + qid)
    tmp.write_bytes(data)
    tmp.rename(incoming / qid)


def test_queue_file_cut_at_every_record_boundary(make_instance, make_sink):
    qid, data = real_queue_file(make_instance)
    bounds = qfile_boundaries(data)
    types = "".join(chr(data[b]) for b in bounds[:-1])
    assert types[0] == "S" and types[-1] == "E" and "C" in types, types

    # Every strict prefix that ends on a record boundary (0: empty file),
    # a few cuts inside records, bytes after END, and garbage.
    bad = {}
    for b in bounds[:-1]:
        bad["cut at %d (before %s)" % (b, chr(data[b]))] = data[:b]
    first_c = bounds[types.index("C")]
    first_r = bounds[types.index("R")]
    for off in (1, 3, 5 + 10, first_r + 2, first_r + 8, first_c + 5 + 7,
                len(data) - 1):
        bad["cut at %d (inside a record)" % off] = data[:off]
    bad["a byte after END"] = data + b"E"
    bad["a record after END"] = data + b"E\0\0\0\0"
    bad["unknown record type"] = data[:first_r] + b"Q" + data[first_r + 1:]
    bad["length past end of file"] = (data[:first_c + 1] + b"\x7f\xff\xff\xff"
                                      + data[first_c + 5:])
    bad["garbage"] = bytes((i * 37 + 11) % 256 for i in range(4096))
    bad["text"] = b"not a queue file\n" * 20

    sink = make_sink()
    inst = relay_instance(make_instance, sink.port, retry_schedule="1h")
    names = {}
    for n, (what, content) in enumerate(sorted(bad.items()), start=1):
        name = qid_variant(qid, n)
        assert name != qid and name not in names
        names[name] = what
        drop(inst, name, content)
    whole = qid_variant(qid, len(bad) + 1)
    drop(inst, whole, data)
    inst.check("flush")

    for name, what in names.items():
        inst.wait_log(r"warning: %s: corrupt queue file: .*moved to corrupt"
                      % name, timeout=20)
    wait_until(lambda: set(queue_files(inst, "corrupt")) == set(names), 10,
               what="every bad file in corrupt/")
    for name in names:
        got = (inst.queue_dir / "corrupt" / name).read_bytes()
        assert got == bad[names[name]], "%s changed on its way" % names[name]

    # The whole copy is delivered, and so is a message sent afterwards.
    (copy,) = sink.wait_messages(1)
    assert sorted(copy.rcpt_tos) == ["bob@dest.test", "carol@dest.test"]
    assert copy.data.endswith(b"a line of the body\r\n" * 300)
    inst.wait_log(r"%s: removed" % whole)
    after = send(inst, ["dave@dest.test"])
    msgs = sink.wait_messages(2)
    assert msgs[1].rcpt_tos == ["dave@dest.test"]
    inst.wait_log(r"%s: removed" % after)
    assert len(sink.received()) == 2, "a cut file was delivered"
    for queue in ("incoming", "active", "deferred"):
        assert queue_files(inst, queue) == [], queue
    no_deaths(inst)


# --- 2. a peer that stalls after the final dot -----------------------------

class StallServer:
    """An SMTP server on loopback that answers everything up to DATA's 354,
    takes the content, and never answers the final dot. Counts the
    connections it saw closed by the client."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stalled = 0          # messages whose final dot went unanswered
        self.closed = 0           # of those, connections the client closed
        self._conns = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn):
        conn.settimeout(0.2)
        buf = b""
        in_data = False

        def lines():
            nonlocal buf
            while not self._stop.is_set():
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line.rstrip(b"\r")
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
        try:
            conn.sendall(b"220 stall.test ESMTP\r\n")
            for line in lines():
                word = line[:4].upper()
                if in_data:
                    if line == b".":
                        self.stalled += 1
                        break
                elif word in (b"EHLO", b"HELO"):
                    conn.sendall(b"250-stall.test\r\n250 8BITMIME\r\n")
                elif word in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    conn.sendall(b"250 2.0.0 Ok\r\n")
                elif word == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    in_data = True
                elif word == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"502 5.5.2 what?\r\n")
            else:
                return
            # Silence from here on; wait for the client to give up.
            for _ in lines():
                pass
            if not self._stop.is_set():
                self.closed += 1
        except OSError:
            pass

    def stop(self):
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(timeout=5)
        for conn in self._conns:
            conn.close()


def test_peer_stalls_after_final_dot(make_instance, make_sink):
    stall = StallServer()
    try:
        inst = relay_instance(make_instance, stall.port,
                              smtp_data_done_timeout="2s",
                              retry_schedule="1h")
        qid = send(inst, ["bob@dest.test"])
        inst.wait_log(r"%s: to=<bob@dest.test>, .*dsn=4\.\d+\.\d+, "
                      r"status=deferred \(conversation with 127\.0\.0\.1"
                      r"\[127\.0\.0\.1\] timed out while sending end of data"
                      % qid, timeout=20)
        assert stall.stalled == 1
        # The timeout freed the connection: the client closed it.
        wait_until(lambda: stall.closed == 1, 10,
                   what="the smtp client to close the stalled connection")
        wait_until(lambda: qid in queue_files(inst, "deferred"), 10,
                   what="deferred/")
    finally:
        stall.stop()
    # A real server on the same port; the next try is an hour away: flush.
    sink = make_sink(port=stall.port)
    inst.check("flush")
    (got,) = sink.wait_messages(1)
    assert got.rcpt_tos == ["bob@dest.test"]
    inst.wait_log(r"%s: removed" % qid)
    no_deaths(inst)


# --- 3. a peer that answers garbage instead of a greeting -------------------

# what the peer says, and what the deferral reason must match
GARBAGE = {
    "text": (b"hello\r\n",
             r"protocol error: host 127\.0\.0\.1\[127\.0\.0\.1\] said: .*\(malformed reply\)"),
    "binary": (bytes(range(256)) + b"\r\n",
               r"protocol error: host 127\.0\.0\.1\[127\.0\.0\.1\] said: .*\(malformed reply\)"),
    "long line": (b"2" * 200000 + b"\r\n",
                  r"protocol error: host 127\.0\.0\.1\[127\.0\.0\.1\] said: 2+\.\.\. \(reply line too long\)"),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_peer_answers_garbage(make_instance, make_sink, kind):
    greeting, why = GARBAGE[kind]
    raw = RawServer(greeting=greeting)
    try:
        inst = relay_instance(make_instance, raw.port, retry_schedule="1h")
        qid = send(inst, ["bob@dest.test"])
        (hit,) = inst.wait_log(r"%s: to=<bob@dest.test>, .*dsn=(4\.\d+\.\d+), "
                               r"status=deferred \((.*)\), category=\w+$" % qid,
                               timeout=20)
        assert re.search(why, hit.group(2)), hit.group(2)
        assert raw.connections >= 1
        wait_until(lambda: qid in queue_files(inst, "deferred"), 10,
                   what="deferred/")
    finally:
        raw.stop()
    # smtp still works (same process or a new one): flush to a real server.
    sink = make_sink(port=raw.port)
    inst.check("flush")
    sink.wait_messages(1)
    inst.wait_log(r"%s: removed" % qid)
    no_deaths(inst)


# --- 4. DNS answers SERVFAIL ------------------------------------------------

class ServFail:
    """A UDP DNS server on loopback answering every query with SERVFAIL
    (RCODE 2): the query's ID and question, QR set, no records."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.port = self.udp.getsockname()[1]
        self.server = "127.0.0.1:%d" % self.port
        self.queries = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                packet, peer = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(packet) < 12:
                continue
            qid, flags, qdcount = struct.unpack(">HHH", packet[:6])
            # the question: labels up to the root, then type and class
            pos = 12
            while pos < len(packet) and packet[pos] != 0:
                pos += 1 + packet[pos]
            question = packet[12:pos + 5] if qdcount else b""
            self.queries.append(question)
            rd = flags & 0x0100
            reply = struct.pack(">HHHHHH", qid, 0x8000 | 0x0080 | rd | 2,
                                1 if question else 0, 0, 0, 0) + question
            try:
                self.udp.sendto(reply, peer)
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.udp.close()


def test_dns_servfail_defers_never_bounces(make_instance):
    dns = ServFail()
    try:
        inst = make_instance(start=True, params={
            "mynetworks": "127.0.0.0/8",
            "disable_dns_lookups": "no",
            "dns_servers": dns.server,
            "smtp_dns_timeout": "5s",
            "retry_schedule": "1s",
            "maximal_queue_lifetime": "1h",
        })
        qid = send(inst, ["user@servfail.test"])
        inst.wait_log(r"%s: to=<user@servfail\.test>, .*dsn=4\.4\.3, "
                      r"status=deferred" % qid, timeout=30)
        assert dns.queries, "the SERVFAIL server was never asked"
        # Retries keep deferring: three deferrals, none bounced.
        inst.wait_log(r"%s: to=<user@servfail\.test>, .*status=deferred" % qid,
                      timeout=30, count=3)
    finally:
        dns.stop()
    log = inst.log()
    assert not re.search(r"%s: .*status=bounced" % qid, log), \
        "a SERVFAIL bounced the message"
    # No DSN: nothing was queued from the null sender, bounce/ is empty.
    assert "from=<>" not in log, "a DSN was sent"
    assert queue_files(inst, "bounce") == []
    assert qid in queue_files(inst, "deferred") + queue_files(inst, "active")
    no_deaths(inst)
