"""test_milter_local - non_smtpd_milters: mail from sendmail(1) goes
through the milters in pickup, as Postfix's cleanup does it for local mail

The milters are tests/milter_peer.py (pymilter on Sendmail's libmilter) and
Debian's OpenDKIM, neither written here. Each test submits with the real
bin/sendmail and watches pickup's verdict: delivered with the milter's
changes (at an aiosmtpd sink), discarded, moved to hold/ (a reject: sendmail
has exited, nobody else can be told), or left in maildrop/ for a later try
(a tempfail, a milter that is down with milter_default_action tempfail, a
refused recipient) and then delivered once the milter lets it through.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, CMD_TIMEOUT, LIBEXEC, free_port, require, wait_until
from test_milter import need, opendkim  # noqa: F401 (a fixture)

HERE = Path(__file__).resolve().parent
SENDMAIL = BIN / "sendmail"

MESSAGE = (b"From: <user@src.test>\n"
           b"To: <bob@dest.test>\n"
           b"Subject: original subject\n"
           b"X-Remove-Me: yes\n"
           b"X-Keep-Me: yes\n"
           b"\n"
           b"line one\nline two\nline three\n")


@pytest.fixture
def control(tmp_path):
    """The test milter's control directory."""
    path = tmp_path / "milter-control"
    path.mkdir()
    return path


@pytest.fixture
def milter(control):
    """A running tests/milter_peer.py with its control directory; its
    port."""
    need()
    require(SENDMAIL, LIBEXEC / "pickup")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "milter_peer.py"),
                             str(port), str(control)],
                            stdout=subprocess.PIPE)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return True
            except OSError:
                return False
        wait_until(up, what="the test milter listens")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def local_instance(make_instance, sink, address, **params):
    conf = {"non_smtpd_milters": address}
    conf.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=conf)


def sendmail(inst, *args, data=MESSAGE):
    environ = dict(os.environ)
    environ.pop("SLUICE_CONFIG", None)
    r = subprocess.run([str(SENDMAIL), "-C", str(inst.dir)] +
                       [str(a) for a in args], input=data,
                       capture_output=True, timeout=CMD_TIMEOUT, env=environ)
    assert r.returncode == 0, r.stderr
    return r


def files(inst, queue):
    return sorted(p.name for p in (inst.queue_dir / queue).rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def headers(data):
    return data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")


def test_local_mail_gets_the_milters_changes(make_instance, make_sink,
                                             milter):
    """The milter saw a session from localhost [127.0.0.1] with the
    envelope and the queue ID in its macros, and its header changes reach
    the recipient; pickup's Received: header is what it saw first."""
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    sendmail(inst, "-f", "user@src.test", "bob@dest.test")
    got = sink.wait_messages(1, timeout=60)
    hdrs = headers(got[0].data)
    assert hdrs[0] == "X-Milter-Top: first", hdrs
    assert hdrs[1].startswith("Received: by "), hdrs
    assert "X-Milter-Seen: original subject / 3" in hdrs, hdrs
    assert "Subject: changed by milter" in hdrs, hdrs
    assert not any(h.startswith("X-Remove-Me") for h in hdrs), hdrs
    assert "X-Keep-Me: yes" in hdrs, hdrs
    [env] = [h for h in hdrs if h.startswith("X-Milter-Env:")]
    queue_id = inst.wait_log(r"(\w+): uid=\d+ from=<user@src.test>")[0][1]
    assert env == ("X-Milter-Env: client=localhost/127.0.0.1"
                   " mail_addr=user@src.test rcpt_addr=bob@dest.test"
                   " i=%s daemon=%s" % (queue_id, inst.conf_get("myhostname"))
                   ), env
    assert got[0].data.endswith(b"\r\n\r\nline one\r\nline two\r\n"
                                b"line three\r\n")
    assert files(inst, "maildrop") == []


def test_body_replacement(make_instance, make_sink, milter):
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    sendmail(inst, "-f", "user@src.test", "bob@dest.test",
             data=MESSAGE.replace(b"X-Keep-Me: yes\n",
                                  b"X-Replace-Body: yes\n"))
    got = sink.wait_messages(1, timeout=60)
    assert got[0].data.endswith(b"\r\n\r\nreplaced by the test milter\r\n"), \
        got[0].data
    assert "Subject: changed by milter" in headers(got[0].data)


def test_body_replacement_is_bounded(make_instance, make_sink, milter):
    """A new body past message_size_limit: the milter has failed, and
    milter_default_action (tempfail) keeps the file in maildrop/."""
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter,
                          message_size_limit="50000")
    sendmail(inst, "-f", "user@src.test", "bob@dest.test",
             data=MESSAGE.replace(b"X-Keep-Me: yes\n",
                                  b"X-Replace-Body: big\n"))
    inst.wait_log(r"milter inet:127.0.0.1:\d+: adds more than 50000 bytes to"
                  r" the message \(message_size_limit\)", timeout=30)
    inst.wait_log(r"left in maildrop/, will retry")
    assert len(files(inst, "maildrop")) == 1
    assert sink.received() == []


def test_hung_milter_times_out(make_instance, make_sink, milter):
    """A milter silent past milter_command_timeout has failed: the
    default action (tempfail) keeps the file."""
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter,
                          milter_command_timeout="2s")
    sendmail(inst, "-f", "hang@src.test", "bob@dest.test")
    inst.wait_log(r"milter inet:127.0.0.1:\d+: timeout", timeout=30)
    inst.wait_log(r"left in maildrop/, will retry")
    assert len(files(inst, "maildrop")) == 1


def test_reject_moves_the_file_to_hold(make_instance, make_sink, milter):
    """A reject: sendmail has long exited, so the file goes to hold/ with
    the milter's reply logged; nothing is delivered, nothing is lost."""
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    sendmail(inst, "-f", "reject@src.test", "bob@dest.test")
    inst.wait_log(r"milter-reject: MAIL from localhost\[127\.0\.0\.1\]: 5\.7\.1"
                  r" rejected by the test milter; from=<reject@src.test>"
                  r" to=<bob@dest.test>", timeout=30)
    inst.wait_log(r"rejected by a milter: 5\.7\.1 rejected by the test"
                  r" milter; moved to hold/")
    assert files(inst, "maildrop") == []
    [held] = files(inst, "hold")
    assert sink.received() == []
    # The administrator may still let it go (past the milter).
    inst.check("release", held)
    got = sink.wait_messages(1, timeout=60)
    assert got[0].mail_from == "reject@src.test"


def test_tempfail_keeps_the_file_until_the_milter_accepts(
        make_instance, make_sink, milter, control):
    sink = make_sink()
    (control / "tempfail").write_text("")
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    sendmail(inst, "-f", "user@src.test", "bob@dest.test")
    inst.wait_log(r"a milter said try again later; left in maildrop/",
                  timeout=30)
    assert len(files(inst, "maildrop")) == 1
    assert sink.received() == []
    (control / "tempfail").unlink()
    # The next submission wakes pickup, which tries the old file again.
    sendmail(inst, "-f", "user@src.test", "carol@dest.test")
    wait_until(lambda: sorted(sink.recipients()) ==
               ["bob@dest.test", "carol@dest.test"], timeout=60,
               what="both messages delivered")
    for msg in sink.received():
        assert "Subject: changed by milter" in headers(msg.data)
    assert files(inst, "maildrop") == []


def test_no_size_limit_caps_what_the_milters_see(make_instance, make_sink,
                                                 milter):
    """message_size_limit = 0: pickup holds at most
    non_smtpd_milter_max_size of a message in memory for the milters; a
    larger one gets milter_default_action (accept: delivered whole, unseen
    by the milter), a small one still goes through the milter."""
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter,
                          message_size_limit="0",
                          non_smtpd_milter_max_size="20k",
                          milter_default_action="accept")
    big = MESSAGE + (b"z" * 70 + b"\n") * 1000
    sendmail(inst, "-f", "user@src.test", "bob@dest.test", data=big)
    got = sink.wait_messages(1, timeout=60)
    hdrs = headers(got[0].data)
    assert "Subject: original subject" in hdrs, hdrs
    assert not any(h.startswith("X-Milter") for h in hdrs), hdrs
    assert got[0].data.count(b"z" * 70 + b"\r\n") == 1000
    inst.wait_log(r"message larger than non_smtpd_milter_max_size \(20480 "
                  r"bytes\): not shown to the milters")
    sendmail(inst, "-f", "user@src.test", "carol@dest.test")
    got = sink.wait_messages(2, timeout=60)
    assert "Subject: changed by milter" in headers(got[1].data)
    assert files(inst, "maildrop") == []


def test_no_size_limit_cap_tempfail_keeps_the_file(make_instance, make_sink,
                                                   milter):
    """With milter_default_action = tempfail a message past
    non_smtpd_milter_max_size stays in maildrop/, as for a failed milter."""
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter,
                          message_size_limit="0",
                          non_smtpd_milter_max_size="20k",
                          milter_default_action="tempfail")
    sendmail(inst, "-f", "user@src.test", "bob@dest.test",
             data=MESSAGE + (b"z" * 70 + b"\n") * 1000)
    inst.wait_log(r"left in maildrop/", timeout=30)
    assert len(files(inst, "maildrop")) == 1
    assert sink.received() == []


def test_refused_recipient_is_a_configuration_error(make_instance,
                                                     make_sink, milter):
    """Postfix: non_smtpd_milters must not refuse a recipient; when one
    does, the mail stays queued (here: in maildrop/) with the error
    logged."""
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    sendmail(inst, "-f", "user@src.test", "reject@dest.test")
    inst.wait_log(r"refused a recipient of non-SMTP mail \(5\.7\.1 rejected"
                  r" by the test milter\): a configuration error", timeout=30)
    assert len(files(inst, "maildrop")) == 1
    assert files(inst, "hold") == []


def test_discard_drops_the_message(make_instance, make_sink, milter):
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    sendmail(inst, "-f", "user@src.test", "discard@dest.test")
    inst.wait_log(r"milter-discard: RCPT from localhost\[127\.0\.0\.1\]:"
                  r" milter triggers DISCARD action; from=<user@src.test>"
                  r" to=<discard@dest.test>", timeout=30)
    sendmail(inst, "-f", "user@src.test", "bob@dest.test")
    sink.wait_messages(1, timeout=60)
    time.sleep(1)
    assert [m.rcpt_tos for m in sink.received()] == [["bob@dest.test"]]
    assert files(inst, "maildrop") == []


def test_quarantine_and_added_recipient(make_instance, make_sink, milter):
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    sendmail(inst, "-f", "user@src.test", "quarantine@dest.test")
    inst.wait_log(r"hold: milter quarantine: held by the test milter",
                  timeout=30)
    assert len(files(inst, "hold")) == 1
    sendmail(inst, "-f", "user@src.test", "bcc-me@dest.test")
    wait_until(lambda: sorted(sink.recipients()) ==
               ["archive@dest.test", "bcc-me@dest.test"], timeout=60,
               what="both recipients delivered")
    inst.wait_log(r"milter: added recipient <archive@dest.test>")


@pytest.mark.parametrize("action", ["tempfail", "accept"])
def test_milter_down(make_instance, make_sink, action):
    need()
    import sink as sinkmod
    sink = make_sink()
    inst = local_instance(make_instance, sink,
                          "inet:127.0.0.1:%d" % sinkmod.dead_port(),
                          milter_default_action=action)
    sendmail(inst, "-f", "user@src.test", "bob@dest.test")
    inst.wait_log(r"warning: milter inet:127.0.0.1:\d+: cannot connect",
                  timeout=30)
    if action == "accept":
        got = sink.wait_messages(1, timeout=60)
        assert "Subject: original subject" in headers(got[0].data)
        assert files(inst, "maildrop") == []
    else:
        inst.wait_log(r"left in maildrop/, will retry")
        assert len(files(inst, "maildrop")) == 1
        assert sink.received() == []


def test_opendkim_signs_local_mail(make_instance, make_sink,
                                   opendkim):  # noqa: F811
    """OpenDKIM as a non-SMTP milter signs what sendmail submitted;
    dkimpy verifies the delivered message with OpenDKIM's key."""
    import dkim
    port, txt = opendkim
    sink = make_sink()
    inst = local_instance(make_instance, sink, "inet:127.0.0.1:%d" % port)
    msg = (b"From: <user@src.test>\n"
           b"To: <bob@dest.test>\n"
           b"Date: Sat, 05 Dec 2026 12:00:00 +0000\n"
           b"Message-ID: <local-1@src.test>\n"
           b"Subject: signed locally\n"
           b"\n"
           b"line one\nline two\n")
    sendmail(inst, "-f", "user@src.test", "bob@dest.test", data=msg)
    got = sink.wait_messages(1, timeout=60)
    data = got[0].data
    assert b"DKIM-Signature:" in data, data

    def dnsfunc(name, timeout=5):
        assert name == b"sel._domainkey.src.test.", name
        return txt.encode()
    assert dkim.verify(data, dnsfunc=dnsfunc), data


def test_pickup_with_milters_under_valgrind(make_instance, make_sink, milter,
                                            control, tmp_path):
    """pickup under valgrind memcheck through every verdict (changes, new
    body, reject, discard, quarantine, tempfail, a milter that is down):
    no error and no definite leak."""
    import shutil
    from test_valgrind import ERROR_EXIT, VALGRIND, WRAPPER, log_problems
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    if os.environ.get("SANITIZE"):
        pytest.skip("built with SANITIZE=1")
    import sink as sinkmod
    sink = make_sink()
    logs = tmp_path / "vg"
    logs.mkdir()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "non_smtpd_milters": "inet:127.0.0.1:%d inet:127.0.0.1:%d"
        % (milter, sinkmod.dead_port()),
        "milter_default_action": "accept"})
    wrapper = inst.dir / "pickup-valgrind"
    wrapper.write_text(WRAPPER.format(valgrind=VALGRIND, code=ERROR_EXIT,
                                      logs=logs, name="pickup",
                                      program=LIBEXEC / "pickup"))
    wrapper.chmod(0o755)
    lines = []
    for line in inst.master_cf.read_text().splitlines():
        fields = line.split()
        if line[:1] not in ("", "#", " ", "\t") and len(fields) >= 8 and \
                fields[7] == "pickup":
            line = " ".join(fields[:7] + [str(wrapper)] + fields[8:])
        lines.append(line)
    inst.master_cf.write_text("\n".join(lines) + "\n")
    inst.start()
    sendmail(inst, "-f", "user@src.test", "bob@dest.test")
    sendmail(inst, "-f", "user@src.test", "carol@dest.test",
             data=MESSAGE.replace(b"X-Keep-Me: yes\n",
                                  b"X-Replace-Body: yes\n"))
    sendmail(inst, "-f", "reject@src.test", "bob@dest.test")
    sendmail(inst, "-f", "user@src.test", "discard@dest.test")
    sendmail(inst, "-f", "user@src.test", "quarantine@dest.test")
    sendmail(inst, "-f", "user@src.test", "bcc-me@dest.test")
    wait_until(lambda: len(sink.received()) == 3, timeout=120,
               what="three messages delivered")
    (control / "tempfail").write_text("")
    sendmail(inst, "-f", "user@src.test", "dave@dest.test")
    inst.wait_log(r"left in maildrop/, will retry", timeout=60)
    inst.stop()
    reports = sorted(logs.glob("pickup.*.log"))
    assert reports, "no valgrind log"
    for report in reports:
        text = report.read_text()
        assert "ERROR SUMMARY: 0 errors" in text, text[-4000:]
        assert log_problems(text) == [], text[-4000:]
