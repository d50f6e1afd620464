"""test_privs - root's commands and the mail user (issue "Hardening")

A system-style instance: root runs the commands and master, mail_owner is
nobody and owns the queue directories (tests/test_local_system.py does the
same). nobody can rename, remove and create whatever it likes in the
directories it owns, and must not be able to steer root with that:

- `sluice check` as root changes a queue directory only through the
  descriptor it opened without following a symbolic link: a mail_owner
  that swaps queue/hold for a symbolic link to a root-owned setuid file
  between root's look and root's change (tests/raceshim.c does the swap
  at the first chown or chmod call) does not get that file chowned or
  chmodded, and the next check reports the link and changes nothing.
- a pid file that nobody planted (and holds locked, as master would),
  naming a process of root's, is not signalled by root's `sluice stop` or
  `sluice reload`: they signal only a process that runs this instance's
  master program and holds the pid file open.
- a master run as root keeps pid/ and master.pid root's (0755, 0644),
  replacing a master.pid that nobody planted there; nobody can write
  neither; stop and reload still reach the real master.
- no daemon runs as root: with mail_owner root, `sluice start` (master)
  refuses with one line and `sluice check` says why; a daemon started by
  hand as root with that main.cf exits with a fatal log line; without
  mail_owner in main.cf, root's default is the user sluice, and start and
  check name the useradd command when it does not exist.
- an instance that root makes with `sluice init` runs every daemon (local
  too) as nobody, master as root, and its alias |commands as nobody.

The tests need root.
"""

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import fcntl
from pathlib import Path

import pytest

from conftest import (Instance, LIBEXEC, SLUICE, free_port, one_line,
                      pid_alive, proc_uids, require, smtp_queue, wait_until)

OWNER = "nobody"
ROOT = LIBEXEC.parent
RACE_SRC = ROOT / "tests" / "raceshim.c"


def uid_of(name):
    return pwd.getpwnam(name).pw_uid


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: root's commands against a mail_owner")


@pytest.fixture(scope="module")
def raceshim(tmp_path_factory):
    """tests/raceshim.c compiled; what LD_PRELOAD names (after the
    sanitizer runtimes of a SANITIZE=1 build: ASan must come first)."""
    cc = shutil.which("cc")
    if cc is None:
        if os.environ.get("CI"):
            pytest.fail("cc is missing: the race shim cannot be built")
        pytest.skip("cc is missing")
    out = tmp_path_factory.mktemp("raceshim") / "raceshim.so"
    subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-shared",
                    "-fPIC", "-o", str(out), str(RACE_SRC), "-ldl"],
                   check=True, timeout=120)
    libs = []
    ldd = subprocess.run(["ldd", str(SLUICE)], capture_output=True,
                         text=True, timeout=30).stdout
    for runtime in ("libasan.so", "libubsan.so"):
        if runtime.split(".")[0] + "." in ldd:
            path = subprocess.run([cc, "-print-file-name=" + runtime],
                                  capture_output=True, text=True,
                                  timeout=30).stdout.strip()
            libs.append(os.path.realpath(path))
    return " ".join(libs + [str(out)])


@pytest.fixture
def system(request):
    """(instance, base folder): made by root, mail_owner nobody, the queue
    handed to nobody by `sluice check`; not started."""
    needs_root()
    require(SLUICE, LIBEXEC / "master")
    base = Path(tempfile.mkdtemp(prefix="sluice-pv-", dir="/tmp"))
    os.chmod(base, 0o755)
    inst = Instance(base / "i", free_port())
    try:
        inst.init()
        inst.conf_set(mail_owner=OWNER)
        inst.check("check")
        assert (inst.queue_dir / "hold").stat().st_uid == uid_of(OWNER)
        yield inst, base
    finally:
        complaint = inst.shutdown()
        if not complaint:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


def test_check_does_not_follow_a_swapped_link(system, raceshim):
    inst, base = system
    hold = inst.queue_dir / "hold"
    # root's setuid file, somewhere nobody cannot write
    (base / "root").mkdir(mode=0o755)
    target = base / "root" / "setuid-prog"
    target.write_bytes(b"#!/bin/sh\n")
    os.chmod(target, 0o4755)
    # a queue directory that check will want to fix (owner and mode)
    os.chown(hold, 0, 0)
    os.chmod(hold, 0o755)

    env = dict(os.environ, LD_PRELOAD=raceshim, RACE_DIR=str(hold),
               RACE_TARGET=str(target))
    env.pop("SLUICE_CONFIG", None)
    subprocess.run([str(SLUICE), "-c", str(inst.dir), "check"],
                   capture_output=True, text=True, timeout=60, env=env)
    assert hold.is_symlink(), "the race shim did not swap %s" % hold

    st = os.lstat(target)
    assert (st.st_uid, st.st_gid) == (0, 0), "root chowned the link's target"
    assert stat.S_IMODE(st.st_mode) == 0o4755, \
        "root chmodded the link's target: %o" % stat.S_IMODE(st.st_mode)

    # the next check says what is wrong and still changes nothing
    r = inst.command("check")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "sluice: error: %s: not a directory (a symbolic link); left alone" \
        % hold in one_line(r.stderr), r.stderr
    st = os.lstat(target)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o4755)
    assert hold.is_symlink()


def test_check_leaves_a_symlinked_hash_directory(system):
    """A hash directory (deferred/A) that is a symbolic link to a root
    directory: reported, and nothing in or of the target changes."""
    inst, base = system
    victim = base / "victim"
    victim.mkdir(mode=0o755)
    (victim / "file").write_text("root's\n")
    hashdir = inst.queue_dir / "deferred" / "A"
    hashdir.rmdir()
    hashdir.symlink_to(victim)
    r = inst.command("check")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "sluice: error: %s: not a directory (a symbolic link); left alone" \
        % hashdir in one_line(r.stderr), r.stderr
    st = os.lstat(victim)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert os.lstat(victim / "file").st_uid == 0


def as_owner(*argv, **kw):
    """Run argv as mail_owner (nobody)."""
    return subprocess.run(["runuser", "-u", OWNER, "--"] + list(argv),
                          capture_output=True, text=True, timeout=60, **kw)


def locked(path):
    """Does some process hold a lock on path?"""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_stop_and_reload_do_not_signal_a_planted_pid(system):
    inst, base = system
    pid_dir = inst.queue_dir / "pid"
    pid_file = pid_dir / "master.pid"
    # the layout before the fix, or a queue top that nobody owns: pid/ is
    # nobody's, and nobody plants a locked master.pid naming root's sleep
    os.chown(pid_dir, uid_of(OWNER), -1)
    os.chmod(pid_dir, 0o700)
    victim = subprocess.Popen(["sleep", "300"])
    holder = None
    try:
        holder = subprocess.Popen(["runuser", "-u", OWNER, "--", "flock",
                                   str(pid_file), "sleep", "300"])
        wait_until(lambda: locked(pid_file), 10, what="nobody's lock")
        r = as_owner("sh", "-c", 'printf "%%10d\\n" %d > %s'
                     % (victim.pid, pid_file))
        assert r.returncode == 0, r.stderr
        assert int(pid_file.read_text()) == victim.pid

        for cmd in ("stop", "reload"):
            r = inst.command(cmd)
            assert r.returncode == 1, (cmd, r.stdout, r.stderr)
            assert one_line(r.stderr) == [
                "sluice: %s: the pid file names pid %d, which does not run "
                "%s/master; not signalling it" % (cmd, victim.pid, LIBEXEC)
            ], r.stderr
            assert victim.poll() is None and pid_alive(victim.pid), \
                "sluice %s signalled root's process" % cmd
    finally:
        for proc in (holder, victim):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=30)


def test_root_master_keeps_the_pid_file_roots(system):
    inst, base = system
    pid_dir = inst.queue_dir / "pid"
    pid_file = pid_dir / "master.pid"
    # nobody had pid/ and left a master.pid of its own there
    os.chown(pid_dir, uid_of(OWNER), -1)
    os.chmod(pid_dir, 0o700)
    r = as_owner("sh", "-c", "echo 1 > %s" % pid_file)
    assert r.returncode == 0, r.stderr
    inst.start()
    mpid = inst.master_pid()
    assert mpid and int(pid_file.read_text()) == mpid
    st = os.lstat(pid_dir)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    st = os.lstat(pid_file)
    assert stat.S_ISREG(st.st_mode)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
    assert as_owner("sh", "-c", "echo 1 > %s" % pid_file).returncode != 0
    assert as_owner("touch", str(pid_dir / "other.pid")).returncode != 0
    assert int(pid_file.read_text()) == mpid
    # `sluice check` as root leaves pid/ root's
    r = inst.command("check")
    assert r.returncode == 0 and "pid" not in r.stdout, (r.stdout, r.stderr)
    assert os.lstat(pid_dir).st_uid == 0
    # the real master passes stop's and reload's checks
    r = inst.command("reload")
    assert r.returncode == 0, r.stderr
    r = inst.command("stop")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: not pid_alive(mpid), 30, what="master to stop")


def test_start_refuses_mail_owner_root(system):
    inst, base = system
    inst.conf_set(mail_owner="root")
    r = inst.command("start")
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = one_line(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "mail_owner root is root (uid 0): no sluice daemon runs as root" \
        in lines[0], r.stderr
    assert inst.master_pid() is None and inst.status() != 0
    r = inst.command("check")
    assert r.returncode == 1
    assert any(l.startswith("sluice: error: mail_owner root is root")
               for l in one_line(r.stderr)), r.stderr


def test_daemon_refuses_to_stay_root(system):
    """A daemon started by hand as root with mail_owner = root: a fatal
    log line, no service."""
    inst, base = system
    inst.conf_set(mail_owner="root")
    env = dict(os.environ, SLUICE_CONFIG=str(inst.dir), SLUICE_LOG_STDERR="1")
    r = subprocess.run([str(LIBEXEC / "cleanup")], capture_output=True,
                       text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode != 0, r.stderr
    assert "fatal: refusing to run as root: mail_owner root is root" \
        in r.stderr, r.stderr
    inst.wait_log(r"sluice/cleanup\[\d+\]: fatal: refusing to run as root")


def test_root_default_mail_owner_is_sluice(system):
    inst, base = system
    try:
        pwd.getpwnam("sluice")
        pytest.skip("this machine has a user sluice")
    except KeyError:
        pass
    text = inst.main_cf.read_text()
    inst.main_cf.write_text("".join(l for l in text.splitlines(True)
                                    if not l.startswith("mail_owner")))
    assert inst.conf_get("mail_owner") == "sluice"
    assert one_line(inst.check("conf", "-d", "mail_owner"))[0] == \
        "mail_owner = sluice"
    useradd = ("create it with: useradd --system --user-group --home-dir "
               "/var/spool/sluice --no-create-home --shell /usr/sbin/nologin "
               "sluice")
    r = inst.command("start")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert len(one_line(r.stderr)) == 1, r.stderr
    assert "mail_owner sluice: no such user; " + useradd in r.stderr
    assert inst.master_pid() is None
    r = inst.command("check")
    assert r.returncode == 1
    assert "sluice: error: mail_owner sluice: no such user; " + useradd \
        in r.stderr, r.stderr


def test_root_made_instance_runs_daemons_as_nobody(make_instance):
    """`sluice init` as root: master as root, every daemon as nobody, an
    alias |command as nobody, Maildir delivery as nobody."""
    needs_root()
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "local")))
    inst = make_instance()
    assert inst.conf_get("mail_owner") == OWNER
    out = inst.dir / "out"
    out.mkdir()
    os.chown(out, uid_of(OWNER), -1)
    (inst.dir / "aliases").write_text(
        "postmaster: root\nrunid: \"|id -u > %s/runid.uid\"\n" % out)
    inst.check("map", "-a", "hash:%s" % (inst.dir / "aliases"))
    inst.start()
    owner = uid_of(OWNER)
    assert proc_uids(inst.master_pid()) == (0, 0, 0, 0)
    smtp_queue(inst, "sender@remote.test", ["runid@localhost",
                                            "someone@localhost"],
               "Subject: who\n\nam I\n")
    text = wait_until(lambda: (out / "runid.uid").exists() and
                      (out / "runid.uid").read_text(), 20,
                      what="the alias command's output")
    assert int(text) == owner
    new = inst.dir / "mail" / "someone" / "new"
    files = wait_until(lambda: new.is_dir() and list(new.iterdir()), 20,
                       what="a message in %s" % new)
    assert files[0].stat().st_uid == owner
    for name in ("smtpd", "cleanup", "qmgr", "local"):
        pid = inst.child(name)
        wait_until(lambda: proc_uids(pid) != (0, 0, 0, 0) or
                   not pid_alive(pid), 20, what="%s to drop root" % name)
        assert proc_uids(pid) == (owner,) * 4, name
