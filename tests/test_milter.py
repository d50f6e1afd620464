"""test_milter - smtpd_milters: the Sendmail milter protocol against a
milter built on libmilter (tests/milter_peer.py, python3-milter), which we
did not write

Each test proves one behaviour a Postfix admin expects of a milter: a
REJECT of a recipient with the milter's own reply text, a TEMPFAIL of MAIL
FROM, header changes at the end of the message (add, insert, change,
delete, checked at an aiosmtpd sink), and milter_default_action when the
milter is down or hangs past milter_command_timeout.
"""

import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, require_daemon, wait_until

HERE = Path(__file__).resolve().parent

MESSAGE = (b"From: <user@src.test>\r\n"
           b"To: <bob@dest.test>\r\n"
           b"Subject: original subject\r\n"
           b"X-Remove-Me: yes\r\n"
           b"X-Keep-Me: yes\r\n"
           b"\r\n"
           b"line one\r\nline two\r\nline three\r\n")


def need():
    require_daemon("smtpd")
    try:
        import Milter  # noqa: F401
    except ImportError:
        pytest.skip("python3-milter is not installed (./install-deps.sh)")


@pytest.fixture
def milter():
    """A running tests/milter_peer.py; its port."""
    need()
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "milter_peer.py"),
                             str(port)], stdout=subprocess.PIPE)
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


def milter_instance(make_instance, sink, address, **params):
    conf = {"smtpd_milters": address, "smtpd_peername_lookup": "no"}
    conf.update(params)
    return make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=conf)


def headers(data):
    return data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")


def test_reject_tempfail_and_header_changes(make_instance, make_sink, milter):
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        code, text = client.mail("tempfail@src.test")
        assert code == 451 and b"4.7.1" in text, (code, text)
        assert client.mail("user@src.test")[0] == 250
        code, text = client.rcpt("reject@dest.test")
        assert (code, text) == (550, b"5.7.1 rejected by the test milter")
        assert client.rcpt("bob@dest.test")[0] == 250
        code, text = client.data(MESSAGE)
        assert code == 250, text
    got = sink.wait_messages(1, timeout=60)
    assert got[0].rcpt_tos == ["bob@dest.test"]
    hdrs = headers(got[0].data)
    # Inserted at the top, added at the end (after what the milter saw).
    assert hdrs[0] == "X-Milter-Top: first", hdrs
    assert "X-Milter-Seen: original subject / 3" in hdrs, hdrs
    assert "Subject: changed by milter" in hdrs, hdrs
    assert not any(h.startswith("Subject: original") for h in hdrs), hdrs
    assert not any(h.startswith("X-Remove-Me") for h in hdrs), hdrs
    assert "X-Keep-Me: yes" in hdrs
    assert got[0].data.endswith(b"\r\n\r\nline one\r\nline two\r\n"
                                b"line three\r\n")
    inst.wait_log(r"NOQUEUE: milter-reject: RCPT from .*: 550 5.7.1 rejected"
                  r" by the test milter; from=<user@src.test>"
                  r" to=<reject@dest.test>")


def test_discard_drops_the_message(make_instance, make_sink, milter):
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("discard@dest.test")[0] == 250
        assert client.data(MESSAGE.replace(b"original", b"dropped"))[0] == 250
        # The next message of the session is not discarded.
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    got = sink.wait_messages(1, timeout=60)
    inst.wait_log(r"milter-discard: END-OF-MESSAGE")
    time.sleep(1)
    assert len(sink.received()) == 1
    assert got[0].rcpt_tos == ["bob@dest.test"]


def test_milter_adds_a_recipient(make_instance, make_sink, milter):
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("bcc-me@dest.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    wait_until(lambda: sorted(sink.recipients()) ==
               ["archive@dest.test", "bcc-me@dest.test"],
               timeout=60, what="both recipients delivered")
    inst.wait_log(r"milter: added recipient <archive@dest.test>")


def vm_hwm_kib(pid):
    """The peak resident size of process pid, in KiB."""
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


def test_replaced_body_is_bounded(make_instance, make_sink, milter):
    """A milter's new body arrives in place of the old one; one of 24 MiB,
    past message_size_limit (1 MiB), is refused with 552 5.3.4 at the end
    of DATA, nothing is queued, and smtpd never held it: its peak
    resident size stays far below the body's size. The session goes on."""
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter,
                           message_size_limit=str(1 << 20))
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=120) as client:
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("newbody@dest.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250
        got = sink.wait_messages(1, timeout=60)
        assert got[0].data.endswith(b"\r\n\r\nreplaced body\r\n"
                                    b"second line\r\n"), got[0].data
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("bigbody-24@dest.test")[0] == 250
        code, text = client.data(MESSAGE)
        assert code == 552 and text.startswith(b"5.3.4"), (code, text)
        smtpd = inst.child("smtpd")
        assert vm_hwm_kib(smtpd) < 16 * 1024, vm_hwm_kib(smtpd)
        # The session goes on.
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    inst.wait_log(r"milter .*: its changes to the message exceed "
                  r"message_size_limit")
    inst.wait_log(r"milter-reject: END-OF-MESSAGE .*552 5\.3\.4")
    sink.wait_messages(2, timeout=60)
    time.sleep(1)
    assert len(sink.received()) == 2
    assert [m.rcpt_tos for m in sink.received()] == [["newbody@dest.test"],
                                                     ["bob@dest.test"]]
    queued = [f for sub in ("incoming", "active", "deferred", "hold")
              for f in (inst.queue_dir / sub).rglob("*") if f.is_file()]
    assert queued == []


def test_large_body_to_a_milter_that_does_not_answer_chunks(
        make_instance, make_sink, milter):
    """A 1.4 MB body to the test milter, which does not answer body chunks
    (smtpd then sends them as its output drains, not all at once): the
    milter sees every line, and the message arrives whole."""
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    lines = [b"line %06d %s" % (i, b"y" * 60) for i in range(20000)]
    body = b"\r\n".join(lines) + b"\r\n"
    msg = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=120) as client:
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        assert client.data(msg)[0] == 250
    got = sink.wait_messages(1, timeout=60)
    assert "X-Milter-Seen: changed by milter / 20000" in headers(got[0].data) \
        or "X-Milter-Seen: original subject / 20000" in headers(got[0].data)
    assert got[0].data.endswith(b"\r\n\r\n" + body)


def test_quarantine_puts_the_message_on_hold(make_instance, make_sink,
                                            milter):
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("quarantine@dest.test")[0] == 250
        code, text = client.data(MESSAGE)
        assert code == 250, text
    qid = text.decode().split()[-1]
    inst.wait_log(r"%s: hold: milter quarantine: held by the test milter"
                  % qid)
    held = [p.name for p in (inst.queue_dir / "hold").rglob("*")
            if p.is_file()]
    assert held == [qid], held
    assert sink.received() == []


@pytest.mark.parametrize("action", ["tempfail", "reject", "accept"])
def test_default_action_milter_down(make_instance, make_sink, action):
    need()
    sink = make_sink()
    import sink as sinkmod
    inst = milter_instance(make_instance, sink,
                           "inet:127.0.0.1:%d" % sinkmod.dead_port(),
                           milter_default_action=action)
    if action == "accept":
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
            assert client.mail("user@src.test")[0] == 250
            assert client.rcpt("bob@dest.test")[0] == 250
            assert client.data(MESSAGE)[0] == 250
        got = sink.wait_messages(1, timeout=60)
        assert "Subject: original subject" in headers(got[0].data)
    else:
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP("127.0.0.1", inst.port, timeout=60)
        assert err.value.smtp_code == (421 if action == "tempfail" else 554)
    inst.wait_log(r"warning: milter inet:127.0.0.1:\d+: cannot connect")


def test_hung_milter_times_out(make_instance, make_sink, milter):
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % milter,
                           milter_command_timeout="2s")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        code, text = client.mail("hang@src.test")
        assert code == 451 and b"4.7.1" in text, (code, text)
        # The milter is dropped for the session: default action tempfail.
        assert client.mail("user@src.test")[0] == 451
    inst.wait_log(r"milter inet:127.0.0.1:\d+: timeout waiting for a reply")
    # A new session has a new connection to the milter.
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    sink.wait_messages(1, timeout=60)


@pytest.fixture
def opendkim(tmp_path):
    """OpenDKIM (Debian's opendkim) signing for src.test on a loopback port:
    (port, the public key's TXT text)."""
    import base64
    import shutil
    need()
    if shutil.which("opendkim") is None:
        pytest.skip("opendkim is not installed (./install-deps.sh)")
    try:
        import dkim  # noqa: F401
    except ImportError:
        pytest.skip("python3-dkim is not installed (./install-deps.sh)")
    key = tmp_path / "sel.private"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"],
                   check=True, capture_output=True)
    key.chmod(0o600)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout",
                          "-outform", "DER"], check=True,
                         capture_output=True).stdout
    txt = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    port = free_port()
    conf = tmp_path / "opendkim.conf"
    conf.write_text(
        "Mode s\nDomain src.test\nSelector sel\nKeyFile %s\n"
        "Socket inet:%d@127.0.0.1\nBackground no\nSyslog no\n"
        "PidFile %s\nInternalHosts 127.0.0.1\nRequireSafeKeys no\n"
        "Canonicalization relaxed/relaxed\n"
        % (key, port, tmp_path / "opendkim.pid"))
    proc = subprocess.Popen(["opendkim", "-f", "-x", str(conf)],
                            stderr=subprocess.PIPE)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return True
            except OSError:
                return False
        wait_until(up, what="opendkim listens")
        yield port, txt
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_opendkim_signs(make_instance, make_sink, opendkim):
    """OpenDKIM, a milter we did not write, signs through smtpd_milters;
    dkimpy verifies the delivered message with the key OpenDKIM used."""
    import dkim
    port, txt = opendkim
    sink = make_sink()
    inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % port)
    msg = MESSAGE.replace(b"X-Remove-Me: yes\r\n", b"")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.mail("user@src.test")[0] == 250
        assert client.rcpt("bob@dest.test")[0] == 250
        code, text = client.data(msg)
        assert code == 250, text
    got = sink.wait_messages(1, timeout=60)
    data = got[0].data
    assert b"DKIM-Signature:" in data, data

    def dnsfunc(name, timeout=5):
        assert name == b"sel._domainkey.src.test.", name
        return txt.encode()
    assert dkim.verify(data, dnsfunc=dnsfunc), data


def test_other_sessions_go_on_while_a_milter_is_slow(make_instance, make_sink,
                                                     milter):
    """One smtpd process (maxproc 1): while one session waits for the
    milter's answer to its MAIL FROM, another session of the same process
    is greeted and sends a whole message."""
    import select
    import re
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, params={
        "smtpd_milters": "inet:127.0.0.1:%d" % milter,
        "smtpd_peername_lookup": "no", "milter_command_timeout": "60s"})
    lines = []
    for line in inst.master_cf.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[1] == "inet" and f[7] == "smtpd":
            f[6] = "1"
            line = " ".join(f)
        lines.append(line)
    inst.master_cf.write_text("\n".join(lines) + "\n")
    inst.start()
    slow = smtplib.SMTP("127.0.0.1", inst.port, timeout=60)
    try:
        slow.putcmd("MAIL FROM:<hang@src.test>")
        inst.wait_log(r"connect from unknown\[127\.0\.0\.1\]")
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as fast:
            assert fast.mail("user@src.test")[0] == 250
            assert fast.rcpt("bob@dest.test")[0] == 250
            assert fast.data(MESSAGE)[0] == 250
        # The slow session still waits (the milter sleeps 12 s) ...
        assert select.select([slow.sock], [], [], 0)[0] == []
        # ... and then gets its answer.
        assert slow.getreply()[0] == 250
    finally:
        slow.close()
    pids = set(re.findall(r"smtpd\[(\d+)\]: connect from",
                          inst.maillog.read_text()))
    assert len(pids) == 1, pids


def test_sluice_check_milter_addresses(make_instance):
    """sluice check names a milter address smtpd or pickup could not use
    and an unknown milter_default_action; good addresses pass, with no
    warning for non_smtpd_milters (applied by pickup)."""
    good = make_instance(params={
        "smtpd_milters": "inet:127.0.0.1:8891, unix:/run/m.sock,"
                         " inet:[::1]:11332",
        "milter_default_action": "accept"})
    r = good.command("check")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "non_smtpd_milters" not in r.stderr + r.stdout
    # non_smtpd_milters is applied (pickup): no "not applied" warning.
    good.conf_set(non_smtpd_milters="inet:127.0.0.1:8891")
    r = good.command("check")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "non_smtpd_milters" not in r.stderr + r.stdout, \
        r.stderr + r.stdout
    good.conf_set(non_smtpd_milters="tcp:host:25")
    r = good.command("check")
    assert r.returncode != 0 and "tcp:host:25" in r.stderr + r.stdout
    bad = make_instance(params={
        "smtpd_milters": "inet:127.0.0.1:8891 tcp:host:25 inet:host:0",
        "milter_default_action": "bounce"})
    r = bad.command("check")
    out = r.stderr + r.stdout
    assert r.returncode != 0, out
    assert "tcp:host:25" in out and "inet:host:0" in out, out
    assert "inet:127.0.0.1:8891" not in out, out
    assert 'milter_default_action' in out and '"bounce"' in out, out


def test_broken_milter_gets_the_default_action(make_instance, make_sink):
    """A milter that answers OPTNEG with a packet no milter sends is
    dropped with the reason logged, and milter_default_action (tempfail:
    421 before the greeting) applies; nothing crashes."""
    import threading
    need()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(30)
    port = srv.getsockname()[1]

    def serve():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                conn.recv(4096)                      # the OPTNEG
                conn.sendall(b"\0\0\0\x03Zxx")       # not a milter reply
                conn.recv(4096)                      # until smtpd closes
            except OSError:
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        sink = make_sink()
        inst = milter_instance(make_instance, sink, "inet:127.0.0.1:%d" % port)
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP("127.0.0.1", inst.port, timeout=60)
        assert err.value.smtp_code == 421
        inst.wait_log(r"warning: milter inet:127.0.0.1:%d: unknown reply code"
                      r" 0x5a" % port)
    finally:
        srv.close()
        t.join(15)
