"""test_sendmail_setgid - local submission by a user who is not mail_owner

The setgid install INSTALL describes: `sluice check` makes maildrop/ mode
1730, owner mail_owner, group setgid_group; sendmail is installed setgid to
that group. Then an ordinary user (here `games`, with mail_owner `nobody`
and master started as root, as tests/test_local_system.py does) must be
able to submit: the group may create and rename files in maildrop/ but not
read the directory, so sendmail cannot open it to fsync it and makes the
new name durable another way. The message must reach a sink.

sendmail keeps its group for a configuration directory named with -C only
when root owns that directory and its main.cf and nobody else may write
them; a configuration of the user's own runs without the group, so it
cannot put files anywhere the group may write.

No account or group is created: games, nobody and an existing group that
neither is a member of. The test needs root.
"""

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import (BIN, CMD_TIMEOUT, LIBEXEC, Instance, free_port,
                      require, traced_env, wait_until)

OWNER = "nobody"                        # mail_owner
SUBMITTER = "games"                     # an ordinary user
GROUPS = ("mail", "news", "uucp", "man")    # setgid_group: the first that
                                            # fits (see drop_group)


def drop_group():
    """An existing group that neither OWNER nor SUBMITTER belongs to."""
    for name in GROUPS:
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            continue
        if not any(gid in os.getgrouplist(u, pwd.getpwnam(u).pw_gid)
                   for u in (OWNER, SUBMITTER)):
            return name
    pytest.skip("no group here that %s and %s are both outside of"
                % (OWNER, SUBMITTER))


def as_user(argv, data=b"", wrap=()):
    """argv run as SUBMITTER (real and effective ids, its own groups),
    under wrap (a tracer that root runs) when given. A setgid process is
    not dumpable, and LeakSanitizer cannot stop one (as under ptrace): a
    SANITIZE=1 build checks everything but leaks here."""
    env = traced_env({k: v for k, v in os.environ.items()
                      if k != "SLUICE_CONFIG"})
    return subprocess.run(list(wrap) + ["setpriv", "--reuid", SUBMITTER,
                                        "--regid", SUBMITTER, "--init-groups",
                                        "--"] + argv,
                          input=data, capture_output=True,
                          timeout=CMD_TIMEOUT, env=env)


@pytest.fixture
def system(make_sink):
    """(instance, sink, base, setgid sendmail), master started as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: master runs as root, sendmail as a user")
    require(BIN / "sendmail", LIBEXEC / "pickup", LIBEXEC / "master")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    for name in (OWNER, SUBMITTER):
        pwd.getpwnam(name)              # a stock Debian account; never made
    group = drop_group()
    sink = make_sink()
    base = Path(tempfile.mkdtemp(prefix="sluice-sgid-", dir="/tmp"))
    inst = None
    try:
        os.chmod(base, 0o755)           # the user must reach sendmail
        inst = Instance(base / "i", free_port(),
                        relayhost="[127.0.0.1]:%d" % sink.port)
        inst.init()
        inst.conf_set(mail_owner=OWNER, setgid_group=group)
        assert inst.conf_get("disable_dns_lookups") == "yes"
        inst.check("check")
        drop = (inst.queue_dir / "maildrop").stat()
        assert stat.S_IMODE(drop.st_mode) == 0o1730
        assert drop.st_uid == pwd.getpwnam(OWNER).pw_uid
        assert drop.st_gid == grp.getgrnam(group).gr_gid
        sendmail = base / "sendmail"
        shutil.copy(BIN / "sendmail", sendmail)
        os.chown(sendmail, 0, grp.getgrnam(group).gr_gid)
        os.chmod(sendmail, 0o2755)
        inst.start()
        yield inst, sink, base, sendmail
    finally:
        complaint = inst.shutdown() if inst else None
        if not complaint:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


def test_user_submits_through_setgid_sendmail(system):
    inst, sink, _, sendmail = system
    uid = pwd.getpwnam(SUBMITTER).pw_uid
    r = as_user([str(sendmail), "-C", str(inst.dir), "far@remote.test"],
                data=b"Subject: from a user\n\ncron output\n")
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    inst.wait_log(r"pickup\[\d+\]: \w+: uid=%d from=<%s>" % (uid, SUBMITTER))
    got = wait_until(lambda: [m for m in sink.received()
                              if m.rcpt_tos == ["far@remote.test"]],
                     20, what="the user's message at the sink")
    assert got[0].mail_from.startswith(SUBMITTER + "@")
    assert b"\ncron output\n" in got[0].data.replace(b"\r\n", b"\n")
    assert os.listdir(inst.queue_dir / "maildrop") == []


def test_users_own_configuration_gets_no_group(system):
    """A main.cf the user owns could point queue_directory anywhere:
    sendmail drops the group for it, and for a root-owned directory that
    others may write; the maildrop then refuses the file (exit 75)."""
    inst, _, base, sendmail = system
    pw = pwd.getpwnam(SUBMITTER)
    for name, owner, mode in (("own", pw.pw_uid, 0o755),
                              ("writable", 0, 0o777)):
        conf = base / name
        conf.mkdir()
        shutil.copy(inst.main_cf, conf / "main.cf")
        os.chown(conf, owner, -1)
        os.chown(conf / "main.cf", owner, -1)
        os.chmod(conf, mode)
        r = as_user([str(sendmail), "-C", str(conf), "far@remote.test"],
                    data=b"Subject: s\n\nb\n")
        assert r.returncode == 75, (name, r.stderr)
        assert b"Permission denied" in r.stderr, (name, r.stderr)
    assert os.listdir(inst.queue_dir / "maildrop") == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
def test_user_submission_durable_before_exit(system, tmp_path):
    """The order for a user who cannot read maildrop/: the file fsynced,
    renamed, the directory's open refused, then syncfs(2) on the file's
    descriptor succeeds, and only then does sendmail exit 0."""
    inst, _, _, sendmail = system
    trace = tmp_path / "trace"
    r = as_user([str(sendmail), "-C", str(inst.dir), "far@remote.test"],
                data=b"Subject: s\n\nb\n",
                wrap=("strace", "-f", "-o", str(trace), "-e",
                      "trace=openat,rename,renameat,renameat2,fsync,"
                      "fdatasync,syncfs,exit_group"))
    assert r.returncode == 0, r.stderr
    drop = re.escape(str(inst.queue_dir / "maildrop"))
    steps = []
    fd = None
    for line in trace.read_text().splitlines():
        m = re.search(r'openat\(AT_FDCWD, "%s/\.tmp\.\w+", O_WRONLY.* = (\d+)'
                      % drop, line)
        if m:
            fd = m.group(1)
            steps.append("create")
        elif fd and re.search(r"\b(fsync|fdatasync)\(%s\) += 0" % fd, line):
            steps.append("fsync file")
        elif re.search(r'rename\("%s/\.tmp\.(\w+)", "%s/\1"\) += 0'
                       % (drop, drop), line):
            steps.append("rename")
        elif re.search(r'openat\(AT_FDCWD, "%s", .*O_DIRECTORY\) = -1 EACCES'
                       % drop, line):
            steps.append("directory refused")
        elif fd and re.search(r"syncfs\(%s\) += 0" % fd, line):
            steps.append("syncfs")
        elif "exit_group(0)" in line:
            steps.append("exit 0")
    assert steps == ["create", "fsync file", "rename", "directory refused",
                     "syncfs", "exit 0"], trace.read_text()[-3000:]
