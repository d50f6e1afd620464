"""test_sendmail_opts - sendmail(1)'s command line as Postfix's takes it:
getopt-style bundles (-ti, -it), attached or separate values (-fme, -f me),
--, the DSN options (-N -R -V), -bv, -bd, -I and the options accepted and
ignored (-G -Am -Ac -v -X -L -o...); and sendmail -bs run by an ordinary
user, who cannot write the instance's log file.
"""

import email
import email.policy
import os
import subprocess

import pytest

import qfile_reader
from conftest import BIN, LIBEXEC, CMD_TIMEOUT, require, wait_until
from test_sendmail import SENDMAIL, content, maildrop, sendmail, wait_queued
from test_delivery import dsn_parts, relay_instance


@pytest.fixture(autouse=True)
def built():
    require(SENDMAIL, LIBEXEC / "pickup", LIBEXEC / "cleanup",
            LIBEXEC / "smtpd")


def dropped(inst):
    """The one maildrop file of a stopped instance, parsed."""
    [name] = maildrop(inst)
    return qfile_reader.read(inst.queue_dir / "maildrop" / name)


def remove_dropped(inst):
    for name in maildrop(inst):
        os.unlink(inst.queue_dir / "maildrop" / name)


DOTTED = b"Subject: dot\n\nbefore\n.\nafter\n"


@pytest.mark.parametrize("args", [["-ti"], ["-it"], ["-t", "-oi"],
                                  ["-tG", "-oi"], ["-itv"]])
def test_bundled_flags(make_instance, args):
    """-ti and -it are -t -i: recipients from the header, and a lone dot
    is data (before, a bundle was refused with 64)."""
    inst = make_instance()
    r = sendmail(inst, *args, data=b"To: hdr@example.org\n" + DOTTED)
    assert r.returncode == 0, r.stderr
    qf = dropped(inst)
    assert [x.address for x in qf.rcpts] == ["hdr@example.org"]
    assert qf.content.endswith(b"\nbefore\n.\nafter\n")


def test_attached_and_separate_values(make_instance):
    inst = make_instance()
    r = sendmail(inst, "-fsender@example.org", "-FFull Name", "--",
                 "to@example.org", data=b"Subject: x\n\nbody\n")
    assert r.returncode == 0, r.stderr
    qf = dropped(inst)
    assert qf.sender == "sender@example.org"
    assert qf.attrs.get("full_name") == "Full Name"
    remove_dropped(inst)

    # A value after flags in one bundle: -if me (the rest of the word is
    # -i, the value the next word); -- then a recipient that looks like an
    # option.
    r = sendmail(inst, "-if", "other@example.org", "-F", "Other",
                 "--", "-odd@example.org", data=DOTTED)
    assert r.returncode == 0, r.stderr
    qf = dropped(inst)
    assert qf.sender == "other@example.org"
    assert qf.attrs.get("full_name") == "Other"
    assert [x.address for x in qf.rcpts] == ["-odd@example.org"]
    assert qf.content.endswith(b"\nafter\n")


def test_config_dir_attached(make_instance):
    inst = make_instance()
    r = subprocess.run([str(SENDMAIL), "-C%s" % inst.dir, "-oi",
                        "to@example.org"], input=b"Subject: c\n\nbody\n",
                       capture_output=True, timeout=CMD_TIMEOUT,
                       env={k: v for k, v in os.environ.items()
                            if k != "SLUICE_CONFIG"})
    assert r.returncode == 0, r.stderr
    assert len(maildrop(inst)) == 1


def test_dsn_notify_is_carried(make_instance):
    """-N goes into every recipient's NOTIFY= field of the maildrop file,
    and pickup and cleanup keep it in the queue file."""
    inst = make_instance()
    r = sendmail(inst, "-N", "success,failure", "-R", "hdrs", "-Venv.1",
                 "a@example.org", "b@example.org", data=b"Subject: n\n\nb\n")
    assert r.returncode == 0, r.stderr
    qf = dropped(inst)
    assert [(x.address, x.notify) for x in qf.rcpts] == [
        ("a@example.org", "SUCCESS,FAILURE"),
        ("b@example.org", "SUCCESS,FAILURE")]
    remove_dropped(inst)

    r = sendmail(inst, "-Nnever", "a@example.org", data=b"Subject: n\n\nb\n")
    assert r.returncode == 0, r.stderr
    assert [x.notify for x in dropped(inst).rcpts] == ["NEVER"]

    inst.remove_service("local")
    inst.start()
    [msg] = wait_queued(inst)
    assert "NEVER" in inst.check("cat", msg["queue_id"])


@pytest.mark.parametrize("ret", ["hdrs", "full"])
def test_dsn_ret_and_envid_are_carried(make_instance, make_sink, ret):
    """-R and -V reach the DSN as MAIL FROM's RET= and ENVID= do: a bounce
    names Original-Envelope-Id and returns the headers only (-R hdrs) or
    the whole message (-R full). Before, both were checked and dropped:
    no Original-Envelope-Id and always the whole message."""
    require(LIBEXEC / "qmgr", LIBEXEC / "smtp", LIBEXEC / "bounce")
    sink = make_sink(rcpt_replies={"gone": "550 5.1.1 no such user here"})
    inst = relay_instance(make_instance, sink, retry_schedule="1h")
    r = sendmail(inst, "-f", "alice@example.test", "-R", ret, "-V", "myenvid",
                 "-N", "failure", "gone@dest.test",
                 data=b"Subject: returned\n\nthe secret body\n")
    assert r.returncode == 0, r.stderr
    [dsn] = wait_until(lambda: [m for m in sink.received()
                                if m.mail_from == ""],
                       timeout=30, what="the DSN at the sink")
    assert dsn.rcpt_tos == ["alice@example.test"]
    msg, rcpts = dsn_parts(dsn.data)
    assert [(x["final-recipient"], x["action"]) for x in rcpts] == [
        ("rfc822; gone@dest.test", "failed")]
    [status] = [p for p in msg.walk()
                if p.get_content_type() == "message/delivery-status"]
    top = dict((k.lower(), v) for k, v in status.get_payload()[0].items())
    assert top.get("original-envelope-id") == "myenvid"
    returned = msg.get_payload()[2]
    if ret == "hdrs":
        assert returned.get_content_type() == "text/rfc822-headers"
        assert "Subject: returned" in returned.get_payload()
        assert b"the secret body" not in dsn.data
    else:
        assert returned.get_content_type() == "message/rfc822"
        original = returned.get_payload()[0]
        assert original["Subject"] == "returned"
        assert "the secret body" in original.get_payload()


def test_bad_ret_envid_in_maildrop_file(make_instance):
    """pickup checks "ret" and "envid" again (another sendmail may have
    written the file): a bad one moves the file to corrupt/ with a
    warning, and nothing is lost."""
    inst = make_instance()
    r = sendmail(inst, "-R", "hdrs", "-V", "good", "a@example.org",
                 data=b"Subject: n\n\nb\n")
    assert r.returncode == 0, r.stderr
    [name] = maildrop(inst)
    path = inst.queue_dir / "maildrop" / name
    raw = path.read_bytes()
    assert raw.count(b"HDRS") == 1
    path.write_bytes(raw.replace(b"HDRS", b"BODY"))
    inst.start()
    inst.wait_log(r"%s: bad maildrop file: ret \"BODY\" is not HDRS or FULL;"
                  r" moved to corrupt/"
                  % name)
    assert (inst.queue_dir / "corrupt" / name).exists()


@pytest.mark.parametrize("args,said", [
    (["-N", "sometimes"], "-N"),
    (["-N", "never,success"], "-N"),
    (["-R", "body"], "-R"),
    (["-V", "has space"], "-V"),
    (["-Ax"], "-A"),
    (["-Z"], "unknown option -Z"),
    (["-tZ"], "unknown option -Z"),
    (["-bx"], "-bx"),
    (["-f"], "needs a value"),
])
def test_bad_options_exit_64(make_instance, args, said):
    inst = make_instance()
    r = sendmail(inst, *args, "to@example.org", data=b"Subject: x\n\nb\n") \
        if args != ["-f"] else sendmail(inst, *args, data=b"")
    assert r.returncode == 64, r.stderr
    assert said in r.stderr.decode()
    assert maildrop(inst) == []


def test_ignored_options_accepted(make_instance, tmp_path):
    inst = make_instance()
    xlog = tmp_path / "x.log"
    r = sendmail(inst, "-G", "-Am", "-Ac", "-v", "-X", str(xlog), "-L",
                 "mylabel", "-om", "-oem", "-odb", "-Ohello=1", "-B8BITMIME",
                 "-h", "10", "-n", "-U", "to@example.org",
                 data=b"Subject: x\n\nb\n")
    assert r.returncode == 0, r.stderr
    assert "-X option ignored" in r.stderr.decode()
    assert not xlog.exists()
    assert [x.address for x in dropped(inst).rcpts] == ["to@example.org"]


def test_bv_reports_each_recipient(make_instance):
    inst = make_instance()
    r = sendmail(inst, "-bv", "a@example.org, B <b@example.org>",
                 data=b"")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert [x.split(":")[0] for x in lines] == ["a@example.org",
                                                 "b@example.org"]
    assert all("deliverable" in x for x in lines)
    assert maildrop(inst) == []
    r = sendmail(inst, "-bv", "bad\x01@example.org", data=b"")
    assert r.returncode == 64
    r = sendmail(inst, "-bv", data=b"")
    assert r.returncode == 64


def test_capital_i_builds_aliases(make_instance):
    """-I is newaliases, as in Postfix."""
    inst = make_instance()
    aliases = inst.dir / "aliases"
    aliases.write_text("postmaster: root\n")
    spec = "hash:%s" % aliases
    inst.conf_set(alias_database=spec, alias_maps=spec)
    db = [p for p in inst.dir.iterdir() if p.name.startswith("aliases.")]
    for p in db:
        p.unlink()
    r = sendmail(inst, "-I")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(BIN / "sluice"), "map", "-q", "postmaster", spec],
                       capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert r.stdout == "root\n", r.stderr


def test_bd_starts_the_mail_system(make_instance):
    inst = make_instance()
    r = sendmail(inst, "-bd")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: inst.master_pid(), 10, what="master running")


AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def test_bs_as_ordinary_user(make_instance):
    """sendmail -bs by a user who may not write the log file: smtpd -S
    logs to syslog instead and the session goes on (before: it died
    before the greeting)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    inst = make_instance(start=True)
    maillog = inst.maillog
    wait_until(maillog.exists, 10, what="maillog")
    os.chmod(maillog, 0o640)
    session = (b"HELO me\r\nMAIL FROM:<nobody@example.org>\r\n"
               b"RCPT TO:<to@example.org>\r\nDATA\r\n"
               b"Subject: nobody\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_CONFIG"}
    r = subprocess.run(AS_NOBODY + [str(SENDMAIL), "-C", str(inst.dir), "-bs"],
                       input=session, capture_output=True,
                       timeout=CMD_TIMEOUT, env=env)
    out = r.stdout.decode("ascii", "replace")
    assert out.startswith("220 "), (out, r.stderr)
    assert "250 2.0.0 Ok: queued as " in out, (out, r.stderr)
    assert r.returncode == 0, r.stderr
    qid = [x for x in out.split("\r\n") if "queued as" in x][0].split()[-1]
    assert "Subject: nobody" in content(inst, qid)


def test_bs_carries_ret_and_envid(make_instance):
    """sendmail -bs runs smtpd -S, so MAIL FROM's RET= and ENVID= (xtext)
    reach the queue file as they do over the network."""
    inst = make_instance()
    inst.remove_service("qmgr")         # the queue file stays in incoming/
    inst.start()
    session = (b"EHLO me\r\nMAIL FROM:<me@example.org> RET=HDRS"
               b" ENVID=bs+2Eone\r\nRCPT TO:<to@example.org>\r\nDATA\r\n"
               b"Subject: bs\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    r = sendmail(inst, "-bs", data=session)
    out = r.stdout.decode("ascii", "replace")
    assert r.returncode == 0 and "queued as " in out, (out, r.stderr)
    qid = [x for x in out.split("\r\n") if "queued as" in x][0].split()[-1]
    [path] = [p for p in (inst.queue_dir / "incoming").rglob(qid)]
    attrs = qfile_reader.read(path).attrs
    assert attrs.get("ret") == "HDRS" and attrs.get("envid") == "bs.one", attrs
