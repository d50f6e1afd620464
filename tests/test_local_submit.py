"""test_local_submit - a Debian drop-in: mail submitted on this host

myorigin = /etc/mailname (Debian's main.cf) names a file whose first line is
the domain of unqualified addresses, for mail from sendmail(1) and over SMTP.

Each test starts an instance that relays everything to an aiosmtpd sink
(tests/sink.py) and looks at what the sink gets.
"""

import os
import pwd
import subprocess

import pytest

from conftest import BIN, CMD_TIMEOUT, LIBEXEC, require, smtp_queue

SENDMAIL = BIN / "sendmail"
DAEMONS = ("smtpd", "cleanup", "qmgr", "smtp", "pickup")


@pytest.fixture(autouse=True)
def built():
    require(SENDMAIL, *(LIBEXEC / d for d in DAEMONS))


def sendmail(inst, *args, data=b""):
    """Run sendmail -C DIR args with data on stdin; must succeed."""
    environ = dict(os.environ)
    environ.pop("SLUICE_CONFIG", None)
    r = subprocess.run([str(SENDMAIL), "-C", str(inst.dir)] + list(args),
                       input=data, capture_output=True, timeout=CMD_TIMEOUT,
                       env=environ)
    assert r.returncode == 0, r.stderr
    return r


def relay_instance(make_instance, sink, **params):
    """An instance (not started) that sends everything to sink."""
    base = {"mynetworks": "127.0.0.0/8", "myhostname": "host.sluice.test",
            "mydestination": "localhost"}
    base.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params=base)


def me():
    return pwd.getpwuid(os.geteuid()).pw_name


def test_myorigin_names_a_file(make_instance, make_sink):
    """myorigin = /path: the domain is the file's first line, for a bare
    recipient and the sender of sendmail, and for bare addresses over SMTP;
    the name of the file never shows up in an address."""
    sink = make_sink()
    inst = relay_instance(make_instance, sink)
    mailname = inst.dir / "mailname"
    mailname.write_text("origin.test\n")
    os.chmod(mailname, 0o644)
    inst.conf_set(myorigin=str(mailname))
    inst.start()

    sendmail(inst, "bob", data=b"Subject: one\n\nbody\n")
    (got,) = sink.wait_messages(1)
    assert got.mail_from == "%s@origin.test" % me()
    assert got.rcpt_tos == ["bob@origin.test"]
    inst.wait_log(r"from=<%s@origin\.test>" % me())

    smtp_queue(inst, "alice", ["carol"], b"Subject: two\r\n\r\nbody\r\n")
    got = sink.wait_messages(2)[1]
    assert got.mail_from == "alice@origin.test"
    assert got.rcpt_tos == ["carol@origin.test"]
    assert str(mailname) not in inst.log()
    assert b"mailname" not in got.data


def test_myorigin_file_missing_is_myhostname(make_instance, make_sink):
    """A myorigin file that does not exist means $myhostname."""
    sink = make_sink()
    inst = relay_instance(make_instance, sink)
    inst.conf_set(myorigin=str(inst.dir / "no-such-mailname"))
    inst.start()
    sendmail(inst, "bob", data=b"Subject: one\n\nbody\n")
    (got,) = sink.wait_messages(1)
    assert got.mail_from == "%s@host.sluice.test" % me()
    assert got.rcpt_tos == ["bob@host.sluice.test"]


def test_local_mail_headers_qualified_and_received(make_instance, make_sink):
    """sendmail with "To: root": the delivered message says
    To: root@$myorigin, Cc and From too, with a Received: by line naming
    the submitting user and the queue ID; an address with a domain, and
    a display name, stay as written."""
    sink = make_sink()
    inst = relay_instance(make_instance, sink, myorigin="origin.test")
    inst.start()
    sendmail(inst, "root", data=b"From: Me <me>\n"
                                b"To: root, other@dest.test\n"
                                b"Cc: \"Carol C\" <carol>\n"
                                b"Subject: local\n\nbody\n")
    (got,) = sink.wait_messages(1)
    head = got.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nTo: root@origin.test, other@dest.test\r\n" in head, head
    assert "\r\nCc: \"Carol C\" <carol@origin.test>\r\n" in head, head
    assert "\r\nFrom: Me <me@origin.test>\r\n" in head, head
    qid = inst.wait_log(r"(\w+): from=<%s@origin\.test>" % me())[0].group(1)
    assert head.startswith(
        "Received: by host.sluice.test (sluice, from userid %d)\r\n"
        "\tid %s; " % (os.geteuid(), qid)), head


def test_smtp_mail_headers_stay_unqualified(make_instance, make_sink):
    """Mail from an SMTP client keeps its bare header addresses."""
    sink = make_sink()
    inst = relay_instance(make_instance, sink, myorigin="origin.test")
    inst.start()
    smtp_queue(inst, "alice@example.test", ["bob@dest.test"],
               b"From: alice@example.test\r\nTo: root\r\nSubject: s\r\n\r\nb\r\n")
    (got,) = sink.wait_messages(1)
    head = got.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nTo: root\r\n" in head, head
    assert "from userid" not in head


def test_sendmail_bs_headers_qualified(make_instance, make_sink):
    """sendmail -bs is local submission too: "To: root" is qualified."""
    sink = make_sink()
    inst = relay_instance(make_instance, sink, myorigin="origin.test")
    inst.start()
    r = sendmail(inst, "-bs", data=b"EHLO me.test\r\n"
                                   b"MAIL FROM:<me>\r\n"
                                   b"RCPT TO:<bob@dest.test>\r\n"
                                   b"DATA\r\n"
                                   b"To: root\r\nSubject: bs\r\n\r\nx\r\n.\r\n"
                                   b"QUIT\r\n")
    assert b"250 2.0.0 Ok: queued as " in r.stdout, r.stdout
    (got,) = sink.wait_messages(1)
    assert got.mail_from == "me@origin.test"
    head = got.data.split(b"\r\n\r\n", 1)[0].decode()
    assert "\r\nTo: root@origin.test\r\n" in head, head
    assert head.startswith("Received: by host.sluice.test (sluice, from userid")
