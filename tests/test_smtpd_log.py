"""test_smtpd_log - what smtpd and its neighbours write to the maillog

Real sessions over loopback against an instance made by `sluice init`; the
maillog is read back.  Covers: no false "lost connection ... message
discarded" when the client ends a transaction with RSET or QUIT before DATA
(a real drop mid-DATA still logs it); syslog_name in the log tag.
"""

import re
import smtplib
import socket
import time

import pytest

from conftest import LIBEXEC, require, wait_until


@pytest.fixture(autouse=True)
def _built():
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")


def start(make_instance, **params):
    params.setdefault("mynetworks", "127.0.0.1/32")
    params.setdefault("myhostname", "mx.test")
    return make_instance(start=True,
                         params={k: str(v) for k, v in params.items()})


def ended(inst, count):
    """Wait until count sessions have logged their disconnect line."""
    inst.wait_log(r"smtpd\[\d+\]: disconnect from ", count=count)
    # cleanup logs after it sees smtpd's close: give it its turn.
    time.sleep(0.5)


def test_rset_or_quit_before_data_is_no_lost_connection(make_instance):
    inst = start(make_instance)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("a@example.test")[0] == 250
        assert s.rcpt("b@example.test")[0] == 250
        assert s.rset()[0] == 250
        assert s.quit()[0] == 221
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("a@example.test")[0] == 250
        assert s.rcpt("b@example.test")[0] == 250
        assert s.quit()[0] == 221
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("a@example.test")[0] == 250
        assert s.rcpt("b@example.test")[0] == 250
        assert s.ehlo("client.test")[0] == 250     # EHLO resets too
        assert s.quit()[0] == 221
    ended(inst, 3)
    log = inst.log()
    assert "lost connection" not in log, log
    assert "discarded" not in log, log


def test_drop_mid_data_still_logs_lost_connection(make_instance):
    inst = start(make_instance)
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220")
    for cmd, code in ((b"EHLO client.test", b"250 "),
                      (b"MAIL FROM:<a@example.test>", b"250"),
                      (b"RCPT TO:<b@example.test>", b"250"),
                      (b"DATA", b"354")):
        sock.sendall(cmd + b"\r\n")
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                break
        assert line.startswith(code), line
    # Enough content that smtpd has passed some of it on to cleanup.
    sock.sendall(b"Subject: cut\r\n\r\n"
                 + (b"y" * 70 + b"\r\n") * 4000)
    time.sleep(0.5)
    f.close()
    sock.close()
    inst.wait_log(r"smtpd\[\d+\]: lost connection after DATA from ")
    # The content cleanup already had is discarded, with a line of its own.
    inst.wait_log(r"cleanup\[\d+\]: \w+: lost connection with client while"
                  r" receiving the message; message discarded")


def test_drop_after_rcpt_is_logged_by_smtpd_once(make_instance):
    inst = start(make_instance)
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220")
    for cmd, code in ((b"HELO client.test", b"250"),
                      (b"MAIL FROM:<a@example.test>", b"250"),
                      (b"RCPT TO:<b@example.test>", b"250")):
        sock.sendall(cmd + b"\r\n")
        assert f.readline().startswith(code)
    f.close()
    sock.close()
    inst.wait_log(r"smtpd\[\d+\]: lost connection after RCPT from ")
    ended(inst, 1)
    assert "discarded" not in inst.log()
