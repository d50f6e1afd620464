"""test_local_system - an instance run the way a system install runs

master is started as root with mail_owner = nobody (an unprivileged user
that a stock Debian 12 has). `sluice check` hands the queue to nobody, as an
administrator would after setting mail_owner. Then:

- every daemon but local runs as nobody (real, effective, saved and file
  system uid); local keeps root as its real and saved uid only, to become
  each recipient, and master gives its private sockets to nobody;
- local delivers to real system accounts (daemon, games) with their uid:
  into Maildirs under a mode 1777 spool (written as the user), and, after a
  reload, into mbox files under a root-owned spool (created by root, given
  to the user); a mailbox someone else put there is not written;
- an unknown user (no passwd entry) bounces 5.1.1, with a DSN to the sender;
- an alias |command runs as default_privs (nobody) since root owns the
  alias table, and so does a |command in root's own .forward (no command
  runs as root);
- a .forward (forward_path under the test folder) is obeyed when it is the
  recipient's own and writable by no one else (man), and ignored, with
  delivery to the mailbox, when another user owns it (lp) or it is
  world-writable (uucp);
- with local_recipient_maps = unix:passwd.byname $alias_maps (Postfix's
  default) smtpd refuses the unknown user at RCPT with 550 5.1.1 and takes
  known users and aliases.

No account is created and /etc/passwd is not touched. The test needs root.
"""

import os
import pwd
import shutil
import smtplib
import stat
import tempfile
from pathlib import Path

import pytest

from conftest import (Instance, LIBEXEC, free_port, pid_alive, proc_uids,
                      require, smtp_queue, wait_until)

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "bounce", "local")
OWNER = "nobody"                        # mail_owner and default_privs
USERS = ("daemon", "games")             # recipients with their own uid
STRANGER = "news"                       # owns nothing here; see test_mbox
UNKNOWN = "nosuchuser-sluice"           # getpwnam finds nothing
FWD_OWN, FWD_FOREIGN, FWD_WRITABLE = "man", "lp", "uucp"   # .forward tests
SENDER = "sender@remote.test"

ALIASES = """\
postmaster: root
runid: "|id -u > {out}/runid.uid"
"""


def uid_of(name):
    return pwd.getpwnam(name).pw_uid


def send(inst, rcpts, body, sender=SENDER):
    """One message over SMTP; every recipient must be accepted."""
    smtp_queue(inst, sender, rcpts, body)


def rcpt_reply(inst, rcpt):
    """(code, text) smtpd gives RCPT TO:<rcpt>."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.mail(SENDER)
        assert code == 250, text
        code, text = client.rcpt(rcpt)
        return code, text.decode(errors="replace")


def body_of(token):
    """A message with a body long enough to show a truncation."""
    lines = ["line %04d of %s" % (i, token) for i in range(300)]
    return "Subject: %s\n\n%s\n" % (token, "\n".join(lines)), lines


@pytest.fixture(scope="module")
def env():
    """(instance, sink, base folder), the instance started as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: master runs as root, local becomes users")
    require(*(LIBEXEC / d for d in DAEMONS))
    for name in (OWNER, STRANGER, FWD_OWN, FWD_FOREIGN, FWD_WRITABLE) + USERS:
        pwd.getpwnam(name)              # a stock Debian account; never made
    with pytest.raises(KeyError):
        pwd.getpwnam(UNKNOWN)
    import sink as sink_mod
    sink = sink_mod.Sink()
    base = Path(tempfile.mkdtemp(prefix="sluice-sys-", dir="/tmp"))
    inst = None
    try:
        # A system install's folders (/etc/sluice, /var/spool/sluice) can
        # be traversed by mail_owner; mkdtemp's 0700 cannot.
        os.chmod(base, 0o755)
        for name, mode in (("spool", 0o1777), ("mbox", 0o755), ("out", 0o1777),
                           ("fwd", 0o755)):
            (base / name).mkdir()
            os.chmod(base / name, mode)
        (base / "fwd" / "root").write_text(
            '"|id -u > %s/rootfwd.uid"\n%s/rootfwd.mbox\n'
            % (base / "out", base / "out"))
        for user, owner, mode in ((FWD_OWN, FWD_OWN, 0o644),
                                  (FWD_FOREIGN, FWD_OWN, 0o644),
                                  (FWD_WRITABLE, FWD_WRITABLE, 0o666)):
            path = base / "fwd" / user
            path.write_text("%s-away@remote.test\n" % user)
            os.chown(path, uid_of(owner), -1)
            os.chmod(path, mode)
        inst = Instance(base / "i", free_port(),
                        relayhost="[127.0.0.1]:%d" % sink.port)
        inst.init()
        (inst.dir / "aliases").write_text(ALIASES.format(out=base / "out"))
        inst.check("map", "-a", "hash:%s" % (inst.dir / "aliases"))
        inst.conf_set(mail_owner=OWNER, default_privs=OWNER,
                      local_system_users="yes",
                      mynetworks="127.0.0.0/8",
                      forward_path="%s/$user" % (base / "fwd"),
                      mail_spool_directory="%s/" % (base / "spool"))
        assert inst.conf_get("disable_dns_lookups") == "yes"
        inst.check("check")             # the queue becomes nobody's
        # the queue's top stays root's, opened to mail_owner (0755)
        top = inst.queue_dir.stat()
        assert top.st_uid == 0 and stat.S_IMODE(top.st_mode) == 0o755
        assert (inst.queue_dir / "incoming").stat().st_uid == uid_of(OWNER)
        inst.start()
        yield inst, sink, base
    finally:
        complaint = inst.shutdown() if inst else None
        sink.stop()
        if not complaint:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


def test_daemons_run_as_mail_owner(env):
    inst, _, _ = env
    owner = uid_of(OWNER)

    def settles(name, want):
        """A process starts as root and drops at once: wait for that, then
        the uids must be want (a slow start is not a failure)."""
        pid = inst.child(name)
        wait_until(lambda: proc_uids(pid) != (0, 0, 0, 0) or
                   not pid_alive(pid), 20, what="%s to drop root" % name)
        assert proc_uids(pid) == want, name

    assert proc_uids(inst.master_pid()) == (0, 0, 0, 0)
    for name in ("smtpd", "cleanup", "qmgr", "smtp", "bounce"):
        settles(name, (owner,) * 4)
    # local keeps root only as its real and saved uid: it acts as nobody.
    settles("local", (0, owner, 0, owner))
    for sock in ("cleanup", "local", "bounce", "smtp"):
        st = (inst.queue_dir / "private" / sock).stat()
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == owner, sock


def maildir_message(base, user, timeout=20):
    new = base / "spool" / user / "new"

    def found():
        files = sorted(new.iterdir()) if new.is_dir() else []
        return files[0] if files else None
    return wait_until(found, timeout, what="a message in %s" % new)


def test_maildir_as_each_user(env):
    inst, _, base = env
    body, lines = body_of("maildir-token")
    send(inst, ["%s@localhost" % u for u in USERS], body)
    for user in USERS:
        uid = uid_of(user)
        path = maildir_message(base, user)
        assert path.stat().st_uid == uid
        for folder in ("", "new", "cur", "tmp"):
            assert (base / "spool" / user / folder).stat().st_uid == uid
        text = path.read_text()
        assert text.startswith("Delivered-To: %s@localhost\n"
                               "Return-Path: <%s>\n" % (user, SENDER))
        assert "\nSubject: maildir-token\n" in text
        assert text.endswith("\n\n" + "\n".join(lines) + "\n")
        inst.wait_log(r"local\[\d+\]: \w+: to=<%s@localhost>, relay=local, .*"
                      r"dsn=2\.0\.0, status=sent \(delivered to maildir\)" % user)


def test_unknown_user_bounces(env):
    inst, sink, base = env
    send(inst, ["%s@localhost" % UNKNOWN], "Subject: lost\n\nnobody home\n")
    inst.wait_log(r"to=<%s@localhost>, relay=local, .*dsn=5\.1\.1, "
                  r"status=bounced \(unknown user: \"%s\"\)" % (UNKNOWN, UNKNOWN))
    dsn = wait_until(lambda: [m for m in sink.received()
                              if SENDER in m.rcpt_tos and m.mail_from == ""],
                     20, what="the DSN at the sink")[0]
    data = dsn.data.decode(errors="replace")
    assert "%s@localhost" % UNKNOWN in data and "5.1.1" in data
    assert not (base / "spool" / UNKNOWN).exists()


def test_alias_command_runs_as_default_privs(env):
    inst, _, base = env
    assert (inst.dir / "aliases.db").stat().st_uid == 0
    send(inst, ["runid@localhost"], "Subject: who\n\nam I\n")
    out = base / "out" / "runid.uid"
    text = wait_until(lambda: out.exists() and out.read_text(), 20,
                      what="the alias command's output")
    assert int(text) == uid_of(OWNER)
    assert out.stat().st_uid == uid_of(OWNER)
    inst.wait_log(r"to=<runid@localhost>, relay=local, .*status=sent "
                  r"\(delivered to command: id -u")


def test_root_forward_command_not_as_root(env):
    """root's own .forward |command and /file run as default_privs, not as
    root (the file was written as root before)."""
    inst, _, base = env
    send(inst, ["root@localhost"], "Subject: root\n\nfor root\n")
    out = base / "out" / "rootfwd.uid"
    text = wait_until(lambda: out.exists() and out.read_text(), 20,
                      what="the .forward command's output")
    assert int(text) == uid_of(OWNER)
    assert out.stat().st_uid == uid_of(OWNER)
    mbox = base / "out" / "rootfwd.mbox"
    wait_until(lambda: mbox.exists() and b"for root" in mbox.read_bytes(), 20,
               what="the .forward file's mbox")
    assert mbox.stat().st_uid == uid_of(OWNER)


def test_dotforward_owner_and_mode(env):
    inst, sink, base = env
    send(inst, ["%s@localhost" % u for u in (FWD_OWN, FWD_FOREIGN,
                                             FWD_WRITABLE)],
         "Subject: fwd\n\nforward me\n")
    wait_until(lambda: [m for m in sink.received()
                        if "%s-away@remote.test" % FWD_OWN in m.rcpt_tos],
               20, what="the forwarded copy at the sink")
    for user, why in ((FWD_FOREIGN, "is owned by uid %d, not by uid %d or "
                       "root" % (uid_of(FWD_OWN), uid_of(FWD_FOREIGN))),
                      (FWD_WRITABLE, "is group or world writable")):
        path = maildir_message(base, user)
        assert path.stat().st_uid == uid_of(user)
        inst.wait_log(r"ignoring \.forward file: .*/fwd/%s %s" % (user, why))
    assert not [m for m in sink.received()
                if any(r.endswith("-away@remote.test") and
                       not r.startswith(FWD_OWN) for r in m.rcpt_tos)]


@pytest.fixture(scope="module")
def reloaded(env):
    """The same instance, reloaded with mbox files (a spool name without
    '/') and Postfix's local_recipient_maps; waits until every process of
    the old configuration has gone."""
    inst, sink, base = env
    old = list(inst.children())
    inst.conf_set(mail_spool_directory=str(base / "mbox"),
                  local_recipient_maps="unix:passwd.byname $alias_maps")
    inst.reload()
    wait_until(lambda: not any(pid_alive(p) for p in old), 30,
               what="the processes of the old configuration to go")
    return env


def test_local_recipient_maps(reloaded):
    inst, _, _ = reloaded
    code, text = rcpt_reply(inst, "%s@localhost" % UNKNOWN)
    assert code == 550 and text.startswith("5.1.1"), (code, text)
    for rcpt in ("daemon@localhost", "runid@localhost"):
        code, text = rcpt_reply(inst, rcpt)
        assert code == 250, (rcpt, code, text)


def test_mbox_as_each_user(reloaded):
    inst, _, base = reloaded
    # A mailbox that someone else made for STRANGER: root does not write it.
    planted = base / "mbox" / STRANGER
    planted.write_text("")
    os.chown(planted, uid_of(USERS[0]), -1)
    body, lines = body_of("mbox-token")
    send(inst, ["%s@localhost" % u for u in USERS + (STRANGER,)], body)
    for user in USERS:
        path = base / "mbox" / user
        text = wait_until(lambda: path.exists() and path.read_text().endswith(
            "\n".join(lines) + "\n\n") and path.read_text(), 20,
            what="a message in %s" % path)
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (uid_of(user), pwd.getpwnam(user).pw_gid)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert text.startswith("From %s " % SENDER)
        head = text.split("\n")
        assert head[1] == "Delivered-To: %s@localhost" % user
        assert "Subject: mbox-token" in head
        # The content is in before the delivery unlocks: the lock file is
        # gone only once the delivery is logged.
        inst.wait_log(r"to=<%s@localhost>, relay=local, .*status=sent "
                      r"\(delivered to mailbox\)" % user)
        assert not (base / "mbox" / (user + ".lock")).exists()
    inst.wait_log(r"to=<%s@localhost>, relay=local, .*dsn=4\.2\.0, "
                  r"status=deferred \(mailbox .*/%s: owner uid %d, not %d"
                  % (STRANGER, STRANGER, uid_of(USERS[0]), uid_of(STRANGER)))
    assert planted.read_text() == ""
