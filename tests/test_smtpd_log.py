"""test_smtpd_log - what smtpd and its neighbours write to the maillog

Real sessions over loopback against an instance made by `sluice init`; the
maillog is read back.  Covers: no false "lost connection ... message
discarded" when the client ends a transaction with RSET or QUIT before DATA
(a real drop mid-DATA still logs it); syslog_name in the log tag.
"""

import os
import re
import shutil
import subprocess
import smtplib
import socket
import time

import pytest

from conftest import LIBEXEC, TOP, require, wait_until


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


# --- syslog_name and pflogsumm ---------------------------------------------

PFLOGSUMM = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"


def test_syslog_name_names_every_line(make_instance):
    inst = start(make_instance, syslog_name="postfix")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.quit()[0] == 221
    inst.wait_log(r" postfix/smtpd\[\d+\]: disconnect from unknown\[127\.0\.0\.1\]")
    inst.wait_log(r" postfix/master\[\d+\]: daemon started")
    assert not re.search(r" sluice/\w+\[", inst.log()), inst.log()


def pflogsumm_counts(maillog, name):
    if not os.path.exists(PFLOGSUMM):
        if os.environ.get("CI"):
            pytest.fail("pflogsumm is missing (Debian package pflogsumm)")
        pytest.skip("pflogsumm is missing (Debian package pflogsumm)")
    out = subprocess.run([PFLOGSUMM, "--syslog-name=" + name, str(maillog)],
                         capture_output=True, text=True, timeout=60,
                         check=True).stdout
    counts = {}
    for what in ("received", "delivered", "forwarded", "deferred", "bounced",
                 "rejected"):
        m = re.search(r"^\s*(\d+)\s+%s\b" % what, out, re.M)
        assert m, "no %r count in pflogsumm's output:\n%s" % (what, out)
        counts[what] = int(m.group(1))
    return counts, out


@pytest.mark.parametrize("name", ["postfix", "sluice"])
def test_pflogsumm_counts_a_scripted_session(make_instance, make_sink, name):
    sink = make_sink(rcpt_replies={"later@dest.test":
                                   "451 4.3.2 try again later"})
    params = {"mynetworks": "127.0.0.0/8", "relay_domains": "dest.test",
              "myhostname": "mx.test"}
    if name != "sluice":
        params["syslog_name"] = name
    # 127.0.0.1 is in mynetworks; 127.0.0.2 is not, so it may only send
    # to relay_domains.
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params=params)
    inst.conf_set(mynetworks="127.0.0.1/32")
    inst.reload()
    body = b"Subject: count\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as s:
        for i in range(3):
            s.sendmail("a@example.test", ["ok%d@dest.test" % i], body)
        s.sendmail("a@example.test", ["later@dest.test"], body)
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10,
                      source_address=("127.0.0.2", 0)) as s:
        s.ehlo("outside.test")
        assert s.mail("b@example.test")[0] == 250
        assert s.rcpt("x@elsewhere.test")[0] == 554
        assert s.quit()[0] == 221
    sink.wait_messages(3)
    inst.wait_log(r" %s/smtp\[\d+\]: \w+: to=<later@dest\.test>.*"
                  r"status=deferred" % name)
    # All three: the sink has them before smtp logs them, and two
    # deliveries may run in parallel (ok2's line before ok1's).
    inst.wait_log(r" %s/smtp\[\d+\]: \w+: to=<ok\d@dest\.test>.*status=sent"
                  % name, count=3)
    counts, out = pflogsumm_counts(inst.maillog, name)
    assert counts == {"received": 4, "delivered": 3, "forwarded": 0,
                      "deferred": 1, "bounced": 0, "rejected": 1}, out


# --- the fail2ban filter ---------------------------------------------------

FAIL2BAN_REGEX = shutil.which("fail2ban-regex") or "/usr/bin/fail2ban-regex"
FILTER = TOP / "conf" / "fail2ban" / "filter.d" / "sluice.conf"


def fail2ban_matches(maillog, filter_path):
    if not os.path.exists(FAIL2BAN_REGEX):
        if os.environ.get("CI"):
            pytest.fail("fail2ban-regex is missing (Debian package fail2ban)")
        pytest.skip("fail2ban-regex is missing (Debian package fail2ban)")
    # A configuration folder of the filter and the common.conf it includes
    # (fail2ban's own, from the fail2ban package).
    conf = maillog.parent / "fail2ban"
    (conf / "filter.d").mkdir(parents=True, exist_ok=True)
    shutil.copy(filter_path, conf / "filter.d" / "sluice.conf")
    shutil.copy("/etc/fail2ban/filter.d/common.conf",
                conf / "filter.d" / "common.conf")
    out = subprocess.run([FAIL2BAN_REGEX, "--config", str(conf),
                          "--print-all-matched", str(maillog), "sluice"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched",
                  out.stdout, re.M)
    assert m, out.stdout + out.stderr
    return int(m.group(1)), out.stdout


@pytest.mark.parametrize("name", ["sluice", "postfix"])
def test_fail2ban_filter_matches_rejected_clients(make_instance, tmp_path,
                                                 name):
    (tmp_path / "users").write_text("alice x\n")
    params = {"mynetworks": "127.0.0.1/32", "myhostname": "mx.test",
              "mydestination": "$myhostname, localhost",
              "local_recipient_maps": "texthash:%s" % (tmp_path / "users"),
              "smtpd_hard_error_limit": "4", "smtpd_error_sleep_time": "0"}
    if name != "sluice":
        params["syslog_name"] = name
    inst = make_instance(start=True, params=params)
    # A client in mynetworks sending good mail: nothing to match.
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10) as s:
        s.ehlo("inside.test")
        assert s.mail("a@example.test")[0] == 250
        assert s.rcpt("b@elsewhere.test")[0] == 250
        assert s.rset()[0] == 250
    # An outside client: two relay attempts and an unknown user (3 lines).
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=10,
                      source_address=("127.0.0.2", 0)) as s:
        s.ehlo("outside.test")
        assert s.mail("spam@example.test")[0] == 250
        assert s.rcpt("x@elsewhere.test")[0] == 554
        assert s.rcpt("y@elsewhere.test")[0] == 554
        assert s.rcpt("nosuchuser-d9@mx.test")[0] == 550
        s.rset()
    # Another one cut off after too many errors (2 rejects + 1 line).
    s = smtplib.SMTP("127.0.0.1", inst.port, timeout=10,
                     source_address=("127.0.0.3", 0))
    s.ehlo("outside.test")
    assert s.mail("spam@example.test")[0] == 250
    assert s.rcpt("x@elsewhere.test")[0] == 554
    assert s.rcpt("y@elsewhere.test")[0] == 554
    assert s.docmd("FOO")[0] == 500
    s.docmd("BAR")         # the 4th error: smtpd closes with 421
    s.close()
    inst.wait_log(r" %s/smtpd\[\d+\]: disconnect from " % name, count=3)
    inst.wait_log(r"too many errors after ")
    matched, out = fail2ban_matches(inst.maillog, FILTER)
    assert matched == 6, out
    hosts = re.findall(r"\[(127\.0\.0\.\d)\]", out.split("Lines:")[0])
    assert "127.0.0.1" not in hosts, out
    # The logwatch service reads the same log (its settings as logwatch
    # passes them: lower-cased, through the environment).
    report = logwatch_report(inst.maillog)
    assert re.search(r"^\s*4\s+5xx Reject relay denied", report, re.M), report
    assert re.search(r"^\s*1\s+5xx Reject unknown user", report, re.M), report


LOGWATCH_POSTFIX = "/usr/share/logwatch/scripts/services/postfix"
LOGWATCH_SERVICE = TOP / "conf" / "logwatch"


def logwatch_report(maillog):
    if not os.path.exists(LOGWATCH_POSTFIX):
        if os.environ.get("CI"):
            pytest.fail("logwatch is missing (Debian package logwatch)")
        pytest.skip("logwatch is missing (Debian package logwatch)")
    env = dict(os.environ, LOGWATCH_DETAIL_LEVEL="10")
    conf = (LOGWATCH_SERVICE / "conf" / "services" / "sluice.conf").read_text()
    for m in re.finditer(r"^\$(\w+)\s*=\s*(.*?)\s*$", conf, re.M):
        value = m.group(2).strip('"')
        env[m.group(1).lower()] = {"Yes": "1", "No": "0"}.get(value, value)
    with open(maillog, "rb") as f:
        out = subprocess.run(["perl", str(LOGWATCH_SERVICE / "scripts" /
                                          "services" / "sluice")],
                             stdin=f, env=env, capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_make_install_puts_fail2ban_and_logwatch_files(tmp_path):
    dest = tmp_path / "stage"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def install():
        r = subprocess.run(["make", "-s", "--no-print-directory", "-C",
                            str(TOP / "conf"), "-f", "Makefile.in", "install",
                            "DESTDIR=%s" % dest, "PREFIX=/usr"],
                           capture_output=True, text=True, timeout=120,
                           env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    install()
    files = {
        "etc/fail2ban/filter.d/sluice.conf":
            TOP / "conf/fail2ban/filter.d/sluice.conf",
        "etc/fail2ban/jail.d/sluice.conf":
            TOP / "conf/fail2ban/jail.d/sluice.conf",
        "etc/logwatch/conf/services/sluice.conf":
            TOP / "conf/logwatch/conf/services/sluice.conf",
        "etc/logwatch/scripts/services/sluice":
            TOP / "conf/logwatch/scripts/services/sluice",
    }
    for path, source in files.items():
        assert (dest / path).read_bytes() == source.read_bytes(), path
        assert (dest / path).stat().st_mode & 0o777 == 0o644, path
    assert re.search(r"^enabled\s*=\s*false$",
                     (dest / "etc/fail2ban/jail.d/sluice.conf").read_text(),
                     re.M)
    # A jail the administrator edited is never replaced.
    (dest / "etc/fail2ban/jail.d/sluice.conf").write_text("[sluice]\nenabled = true\n")
    out = install()
    assert "jail.d/sluice.conf exists: left as it is" in out
    assert (dest / "etc/fail2ban/jail.d/sluice.conf").read_text() == \
        "[sluice]\nenabled = true\n"
