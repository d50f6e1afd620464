"""test_smtpd_limits - smtpd's limits on clients that make errors or dawdle

smtpd_soft_error_limit / smtpd_error_sleep_time (replies slow down),
smtpd_hard_error_limit (421 and the Postfix log line), smtpd_junk_command_limit
(NOOP, VRFY, RSET count as errors past it), smtpd_session_deadline (a client
that trickles bytes cannot hold a session for ever) and the queue_minfree
floor of 1.5 x message_size_limit. Real sessions over loopback sockets;
timing assertions are lower bounds only.
"""

import os
import socket
import time

from conftest import require_daemon


class Client:
    """A raw SMTP client: send bytes, read whole reply lines."""

    def __init__(self, inst, source="127.0.0.1", timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", inst.port),
                                             timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""

    def line(self):
        """One reply line (without CR LF); b"" at EOF."""
        while b"\r\n" not in self.buf:
            got = self.sock.recv(4096)
            if not got:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += got
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self):
        """A whole (multi-line) reply, lines joined by newlines."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3:4] == b"-":
            lines.append(self.line())
        return b"\n".join(lines).decode(errors="replace")

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def test_error_sleep_delays_replies_past_soft_limit(make_instance):
    require_daemon("smtpd")
    inst = make_instance(params={"smtpd_soft_error_limit": "2",
                                 "smtpd_error_sleep_time": "0.3s",
                                 "smtpd_hard_error_limit": "50"}, start=True)
    c = Client(inst)
    assert c.reply().startswith("220 ")
    for _ in range(3):          # errors 1..3: answered at once
        assert c.cmd("BOGUS").startswith("500 ")
    for _ in range(3):          # past the soft limit: each reply waits
        start = time.monotonic()
        assert c.cmd("BOGUS").startswith("500 ")
        assert time.monotonic() - start >= 0.25
    start = time.monotonic()
    assert c.cmd("NOOP").startswith("250 ")   # every reply, not just errors
    assert time.monotonic() - start >= 0.25
    c.close()


def test_hard_error_limit_logs_and_answers_421(make_instance):
    require_daemon("smtpd")
    inst = make_instance(params={"myhostname": "mx.test",
                                 "mynetworks": "127.0.0.1/32",
                                 "smtpd_hard_error_limit": "3"}, start=True)
    c = Client(inst, source="127.0.0.2")
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@example.test>").startswith("250 ")
    for _ in range(2):
        assert c.cmd("RCPT TO:<x@remote.test>").startswith("554 5.7.1 ")
    assert c.cmd("RCPT TO:<x@remote.test>") == \
        "554 5.7.1 <x@remote.test>: Relay access denied"
    assert c.reply() == "421 4.7.0 mx.test Error: too many errors"
    assert c.line() == b""      # closed
    c.close()
    inst.wait_log(r"too many errors after RCPT from unknown\[127\.0\.0\.2\]")


def test_junk_command_limit(make_instance):
    require_daemon("smtpd")
    inst = make_instance(params={"myhostname": "mx.test",
                                 "smtpd_junk_command_limit": "5",
                                 "smtpd_soft_error_limit": "100",
                                 "smtpd_hard_error_limit": "3"}, start=True)
    c = Client(inst)
    assert c.reply().startswith("220 ")
    for verb in ("NOOP", "RSET", "NOOP", "NOOP", "RSET", "NOOP", "NOOP"):
        assert c.cmd(verb).startswith("250 ")
    assert c.cmd("NOOP") == "250 2.0.0 Ok"
    assert c.reply() == "421 4.7.0 mx.test Error: too many errors"
    assert c.line() == b""
    c.close()
    inst.wait_log(r"too many errors after NOOP from unknown\[127\.0\.0\.1\]")


def test_session_deadline_ends_a_trickling_client(make_instance):
    require_daemon("smtpd")
    inst = make_instance(params={"myhostname": "mx.test",
                                 "smtpd_timeout": "300s",
                                 "smtpd_session_deadline": "2s"}, start=True)
    c = Client(inst, timeout=20)
    start = time.monotonic()
    assert c.reply().startswith("220 ")
    c.sock.settimeout(0.3)
    got = b""
    # One byte every 0.3 s, far inside smtpd_timeout; at most 20 s.
    for byte in (b"NOOP\r\n" * 20)[:66]:
        try:
            c.sock.sendall(bytes([byte]))
        except OSError:
            break
        try:
            chunk = c.sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    elapsed = time.monotonic() - start
    assert b"421 4.4.2 mx.test Error: timeout exceeded\r\n" in got, got
    assert elapsed >= 1.9
    c.close()
    inst.wait_log(r"timeout after \w+ from unknown\[127\.0\.0\.1\]:"
                  r" smtpd_session_deadline 2s exceeded")


def test_queue_minfree_floor_is_one_and_a_half_message_size(make_instance):
    require_daemon("smtpd")
    inst = make_instance(params={"queue_minfree": "0"})
    st = os.statvfs(inst.queue_dir)
    avail = st.f_bavail * st.f_frsize
    # A message as large as the free space: 1.5 x that is not there.
    inst.conf_set(message_size_limit=str(avail))
    inst.start()
    c = Client(inst)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@example.test>") == \
        "452 4.3.1 Insufficient system storage"
    c.close()
    inst.wait_log(r"not enough free space in .*queue_minfree is %d"
                  % (avail // 2 * 3))
    # A limit the disk holds 1.5 times: mail is taken.
    inst.stop()
    inst.conf_set(message_size_limit=str(avail // 4))
    inst.start()
    c = Client(inst)
    assert c.reply().startswith("220 ")
    assert c.cmd("EHLO client.test").startswith("250")
    assert c.cmd("MAIL FROM:<a@example.test>").startswith("250 ")
    c.close()
