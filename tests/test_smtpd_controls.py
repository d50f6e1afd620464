"""test_smtpd_controls - control characters in the SMTP envelope

smtpd refuses a control byte in MAIL FROM and RCPT TO addresses (raw, or
in a quoted local part) and in the xtext-decoded ENVID= and ORCPT= values
(RFC 3461: printable US-ASCII), so no CR LF reaches a queue file, a DSN or
`sluice queue` through SMTP; well-formed values are still taken.
"""

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from conftest import CMD_TIMEOUT, MASTER, SLUICE, Instance, free_port, require


def session(inst, commands):
    """Send each command (bytes, CRLF added) on one connection; the reply
    line that ends each answer, in order."""
    replies = []
    with socket.create_connection(("127.0.0.1", inst.port),
                                  timeout=CMD_TIMEOUT) as sock:
        reader = sock.makefile("rb")

        def reply():
            line = reader.readline()
            while line[3:4] == b"-":
                line = reader.readline()
            return line

        assert reply().startswith(b"220 ")
        for cmd in [b"EHLO client.test"] + commands:
            sock.sendall(cmd + b"\r\n")
            replies.append(reply())
        sock.sendall(b"QUIT\r\n")
    return replies[1:]


@pytest.fixture(scope="module")
def inst():
    """One started instance for every case here."""
    require(SLUICE, MASTER)
    base = Path(tempfile.mkdtemp(prefix="sluice-ctl-", dir="/tmp"))
    os.chmod(base, 0o755)   # a root-made instance's daemons run as nobody
    it = Instance(base / "i", free_port())
    try:
        it.init()
        assert it.conf_get("disable_dns_lookups") == "yes"
        it.start()
        yield it
    finally:
        complaint = it.shutdown()
        if not complaint:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


@pytest.mark.parametrize("mail,want", [
    (b"MAIL FROM:<a\x01b@example.org>", b"501 5.1.7 "),
    (b"MAIL FROM:<a\rb@example.org>", b"501 5.1.7 "),
    (b"MAIL FROM:<\"a\\\x0bb\"@example.org>", b"501 5.1.7 "),
    (b"MAIL FROM:<a@example.org> ENVID=a+0D+0AX-Injected:+201", b"501 5.5.4 "),
    (b"MAIL FROM:<a@example.org> ENVID=a+01b", b"501 5.5.4 "),
    (b"MAIL FROM:<a@example.org> ENVID=a+7Fb", b"501 5.5.4 "),
    (b"MAIL FROM:<a@example.org> ENVID=a+00b", b"501 5.5.4 "),
    (b"MAIL FROM:<a@example.org> ENVID=id+2Bone+20two", b"250 "),
])
def test_mail_from(inst, mail, want):
    [reply] = session(inst, [mail])
    assert reply.startswith(want), reply


@pytest.mark.parametrize("rcpt,want", [
    (b"RCPT TO:<b\x01c@localhost>", b"501 5.1.3 "),
    (b"RCPT TO:<\"b\\\rc\"@localhost>", b"501 5.1.3 "),
    (b"RCPT TO:<b@localhost> ORCPT=rfc822;b+0D+0ARCPT+20TO:<x@localhost>",
     b"501 5.5.4 "),
    (b"RCPT TO:<b@localhost> ORCPT=rfc822;b+09c@localhost", b"501 5.5.4 "),
    (b"RCPT TO:<b@localhost> ORCPT=rfc822;b+40localhost", b"250 "),
])
def test_rcpt_to(inst, rcpt, want):
    replies = session(inst, [b"MAIL FROM:<a@example.org>", rcpt])
    assert replies[0].startswith(b"250 "), replies
    assert replies[1].startswith(want), replies
