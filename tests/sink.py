"""sink - real SMTP peers for delivery tests, on loopback

Sink: an aiosmtpd server in a thread that keeps every message it accepts
(envelope, bytes, which connection carried it) and answers as a test tells
it: per-recipient replies, a reply to DATA, no 8BITMIME. RawServer: a
socket server that answers every connection with a fixed greeting (e.g.
"421 busy") and hangs up, or says nothing at all (a stalled peer).
DeadPort: a loopback port where nobody listens.

Every wait here has a deadline; nothing sleeps and hopes.
"""

import asyncio
import itertools
import socket
import threading
import time

import ports

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Received:
    """One message as the sink got it."""

    def __init__(self, envelope, session, connection):
        # aiosmtpd keeps the null sender as "<>"; tests say "".
        self.mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        self.rcpt_tos = list(envelope.rcpt_tos)
        self.mail_options = list(envelope.mail_options)
        self.rcpt_options = list(envelope.rcpt_options)
        self.data = envelope.original_content or b""
        self.peer = session.peer
        self.helo = session.host_name
        self.connection = connection     # 1, 2, ...: which TCP connection
        self.time = time.monotonic()     # when DATA's end was answered

    def __repr__(self):
        return "<Received from=%r to=%r conn=%d %d bytes>" % (
            self.mail_from, self.rcpt_tos, self.connection, len(self.data))


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_reply(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        sink = self.sink
        with sink.lock:
            sink.data_ends += 1
        if sink.data_delay:
            await asyncio.sleep(sink.data_delay)
        with sink.lock:
            if sink.data_reply:
                return sink.data_reply
            conn = sink._conn_number(session)
            sink.messages.append(Received(envelope, session, conn))
            sink.cond.notify_all()
        return "250 2.0.0 Ok: queued"


class _Controller(Controller):
    def __init__(self, sink, **kw):
        self.sink = sink
        super().__init__(sink.handler_class(sink), **kw)

    def factory(self):
        server = SMTP(self.handler, **self.SMTP_kwargs)
        sink = self.sink
        orig_made, orig_lost = server.connection_made, server.connection_lost

        # Count the sessions open at once (sessions_max: the most ever).
        def connection_made(transport):
            with sink.lock:
                sink.sessions_now += 1
                sink.sessions_max = max(sink.sessions_max, sink.sessions_now)
            orig_made(transport)

        def connection_lost(exc):
            with sink.lock:
                sink.sessions_now -= 1
            orig_lost(exc)
        server.connection_made = connection_made
        server.connection_lost = connection_lost
        if not self.sink.eight_bit:
            # aiosmtpd offers 8BITMIME unless it decodes data; take the
            # line out of EHLO by decoding nothing and hiding the keyword.
            orig_push = server.push

            async def push(status):
                if status.strip().upper() in ("250-8BITMIME", "250 8BITMIME"):
                    return
                await orig_push(status)
            server.push = push
        return server


class Sink:
    """An SMTP server on 127.0.0.1 that keeps what it is sent.

    rcpt_replies: {address or local part: "550 5.1.1 no such user"}; an
    address not listed gets 250. data_reply: a reply to DATA's end instead
    of 250 (the message is not kept). data_delay: seconds to wait before
    answering DATA's end (a slow server). All may be changed while it runs.

    Each Received has its time (time.monotonic()); sessions_now and
    sessions_max count the SMTP sessions open at once; data_ends counts the
    ends of DATA received, when they arrive (a client then waits for the
    reply, data_delay seconds).
    """

    handler_class = _Handler        # a subclass may record more per message

    def __init__(self, host="127.0.0.1", port=0, eight_bit=True,
                 rcpt_replies=None, data_reply=None, data_delay=0,
                 server_hostname="sink.test", **controller_kw):
        """controller_kw: more of aiosmtpd's SMTP options (tls_context,
        authenticator, auth_require_tls, ...)."""
        self.host = host
        self.port = port or _free_port(host)
        self.eight_bit = eight_bit
        self.rcpt_replies = dict(rcpt_replies or {})
        self.data_reply = data_reply
        self.data_delay = data_delay
        self.messages = []
        self.data_ends = 0              # ends of DATA seen (before any delay)
        self.sessions_now = 0
        self.sessions_max = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._sessions = {}
        self._numbers = itertools.count(1)
        self.controller = _Controller(self, hostname=host, port=self.port,
                                      server_hostname=server_hostname,
                                      enable_SMTPUTF8=False, **controller_kw)
        self.controller.start()

    def _conn_number(self, session):
        key = id(session)
        if key not in self._sessions:
            self._sessions[key] = next(self._numbers)
        return self._sessions[key]

    def rcpt_reply(self, address):
        with self.lock:
            local = address.split("@")[0]
            return self.rcpt_replies.get(address) or self.rcpt_replies.get(local)

    def set_rcpt_reply(self, address, reply):
        with self.lock:
            if reply is None:
                self.rcpt_replies.pop(address, None)
            else:
                self.rcpt_replies[address] = reply

    def set_data_reply(self, reply):
        with self.lock:
            self.data_reply = reply

    def received(self):
        with self.lock:
            return list(self.messages)

    def recipients(self):
        """Every recipient delivered so far, one entry per delivery."""
        return [r for m in self.received() for r in m.rcpt_tos]

    def wait_messages(self, count, timeout=20.0):
        """Wait until at least count messages arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "sink got %d of %d messages in %.0fs"
                        % (len(self.messages), count, timeout))
                self.cond.wait(left)
            return list(self.messages)

    def stop(self):
        try:
            self.controller.stop()
        except (AssertionError, RuntimeError):
            pass


class RawServer:
    """Accepts connections on loopback (host:port; port 0 picks one) and
    answers each with greeting (bytes; None: say nothing and hold the
    connection until stop)."""

    def __init__(self, greeting=b"421 4.3.2 busy, try later\r\n",
                 host="127.0.0.1", port=0):
        self.greeting = greeting
        self.connections = 0
        self._held = []
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            if self.greeting is None:
                self._held.append(conn)
                continue
            try:
                conn.sendall(self.greeting)
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(1.0)
                conn.recv(1024)
            except OSError:
                pass
            conn.close()

    def stop(self):
        self._stop.set()
        self.sock.close()
        for conn in self._held:
            conn.close()
        self._thread.join(timeout=5)


def dead_port(host="127.0.0.1"):
    """A port on host where nobody listens (connect gets ECONNREFUSED)."""
    return _free_port(host)


def _free_port(host):
    """A port of tests/ports.py (reserved against other test processes)
    that is also free on host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        port = ports.free_port()
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port on %s" % host)
