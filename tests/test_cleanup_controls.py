"""test_cleanup_controls - cleanup's last guard against control bytes

smtpd, sendmail and pickup each refuse a control byte in an envelope
address; cleanup refuses one too, whoever the client is (the HTTP API to
come, a forwarding local, a bug in a producer): 550 5.1.7 for the sender at
BEGIN, 550 5.1.3 for a recipient at END, and no queue file.
"""

import pytest

from test_cleanup import begin, cleanup  # noqa: F401 (the fixture)


@pytest.mark.parametrize("sender", [
    "a@example.com\r\nRCPT TO:<evil@example.com>", "a\x01@example.com",
    "a\x7f@example.com", "a@example.com\n"])
def test_sender_refused(cleanup, sender):  # noqa: F811
    conn = cleanup.connect()
    reply = begin(conn, sender=sender)
    assert reply["status"] == "550", reply
    assert reply["reason"].startswith("5.1.7 "), reply
    conn.close()
    assert cleanup.incoming() == []


@pytest.mark.parametrize("rcpt", [
    "b@example.com\r\nDATA", "b\x1b@example.com", "b\t@example.com"])
def test_recipient_refused(cleanup, rcpt):  # noqa: F811
    conn = cleanup.connect()
    assert begin(conn)["status"] == "0"
    conn.send(("request", "rcpt"), ("address", "ok@example.com"))
    conn.send(("request", "rcpt"), ("address", rcpt))
    conn.send(("request", "data"), ("data", b"Subject: x\n\nbody\n"))
    conn.send(("request", "end"), ("abort", 0))
    reply = conn.read()
    assert reply["status"] == "550", reply
    assert reply["reason"].startswith("5.1.3 "), reply
    conn.close()
    assert cleanup.incoming() == []
