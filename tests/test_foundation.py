"""test_foundation - the foundation issue's system tests (issue 2, item 7)

The `sluice` command (init, start, status, stop, reload; conf is in
test_conf.py) and master's supervision: restart after kill -9, back-off for a
daemon that dies at once, reload of a changed master.cf, one master per
queue, and an instance run by an ordinary user. Every instance comes from the make_instance fixture
(conftest.py), which always stops it.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import (MASTER, SLUICE, child_pids, one_line, pid_alive,
                      proc_cmdline, proc_uids, require, require_daemon, smtp_banner,
                      wait_until)


# --- init / start / status / stop -----------------------------------------

def test_init_writes_an_instance(instance):
    for name in ("main.cf", "master.cf", "log", "data"):
        assert (instance.dir / name).exists(), name
    q = instance.queue_dir
    for sub in ("incoming", "active", "deferred", "maildrop", "private", "public", "pid"):
        assert (q / sub).is_dir(), "queue/%s missing" % sub
    assert instance.conf_get("config_directory") == str(instance.dir)
    assert Path(instance.conf_get("daemon_directory")).resolve() == MASTER.parent
    assert re.search(r"^\s*127\.0\.0\.1:%d\s+inet\s" % instance.port,
                     instance.master_cf.read_text(), re.M)
    assert instance.status() == 1


def test_relayhost_option(make_instance):
    inst = make_instance(relayhost="127.0.0.1:2626")
    assert inst.conf_get("relayhost") == "[127.0.0.1]:2626"


def test_start_status_stop(instance):
    require_daemon("smtpd")
    instance.start()
    # start returns once the listeners are open: connect at once, no waiting
    code, text = smtp_banner(instance.port)
    assert code == 220, text

    r = instance.command("status")
    assert r.returncode == 0, r.stderr
    mpid = instance.master_pid()
    assert mpid, "no live pid in pid/master.pid"
    assert str(mpid) in r.stdout + r.stderr
    names = set(instance.children().values())
    assert {"qmgr", "smtpd"} <= names, names
    # SLUICE_CONFIG=DIR works like -c DIR
    r = subprocess.run([str(SLUICE), "status"], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, SLUICE_CONFIG=str(instance.dir)))
    assert r.returncode == 0, r.stderr
    pids = instance.pids()
    assert len(pids) >= 3

    r = instance.stop()
    assert r.returncode == 0, r.stderr
    # stop returns only when every daemon of the instance is gone
    still = [p for p in pids if pid_alive(p)]
    assert not still, "alive after stop: %s" % {p: proc_cmdline(p) for p in still}
    assert not instance.pids()
    assert instance.status() == 1
    with pytest.raises(OSError):
        smtp_banner(instance.port, timeout=3)


def test_start_fails_cleanly_when_the_port_is_taken(instance):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", instance.port))
        squatter.listen(1)
        r = instance.command("start")
        assert r.returncode != 0
        lines = one_line(r.stderr)
        assert len(lines) == 1, r.stderr
        assert str(instance.port) in lines[0], lines[0]
        assert not instance.pids()
        assert instance.status() == 1


def test_stop_and_reload_when_not_running(instance):
    for cmd in ("stop", "reload"):
        r = instance.command(cmd)
        assert r.returncode != 0, cmd
        assert len(one_line(r.stderr)) == 1, (cmd, r.stderr)
    r = instance.command("status")
    assert r.returncode == 1
    assert "not running" in r.stdout + r.stderr


def test_init_refuses_non_empty_dir(tmp_path):
    require(SLUICE)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "precious").write_text("keep me\n")
    r = subprocess.run([str(SLUICE), "init", str(target), "--smtp-port", "2525"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert len(one_line(r.stderr)) == 1, r.stderr
    assert sorted(os.listdir(target)) == ["precious"]
    assert (target / "precious").read_text() == "keep me\n"


def test_unknown_command(instance):
    r = instance.command("frobnicate")
    assert r.returncode != 0
    lines = one_line(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "frobnicate" in lines[0]


# --- supervision ----------------------------------------------------------

@pytest.mark.parametrize("name", ["smtpd", "qmgr"])
def test_kill_9_child_is_restarted(running, name):
    require_daemon(name)
    old = running.child(name)
    os.kill(old, signal.SIGKILL)
    running.wait_log(r"warning: process \S*/%s pid %d killed by signal 9" % (name, old))
    new = running.child(name, timeout=15)
    assert new != old
    assert running.status() == 0
    if name == "smtpd":
        code, text = smtp_banner(running.port)
        assert code == 220, text


EXIT_RX = r"warning: process /bin/false pid (\d+) exit status 1"
BACKOFF_RX = (r"warning: service crasher: process died too quickly, "
              r"restarting in (\d+) seconds?")


def test_crashing_daemon_backs_off(make_instance):
    inst = make_instance(params={"master_backoff_initial": "1s",
                                 "master_backoff_max": "60s"},
                         services=["crasher unix - - n - 1 /bin/false"])
    seen = {}                           # exit-line pid -> when we saw it
    exit_rx = re.compile(EXIT_RX)
    inst.start()
    t0 = time.monotonic()

    def four_exits():
        now = time.monotonic()
        for m in map(exit_rx.search, inst.log().splitlines()):
            if m and m.group(1) not in seen:
                seen[m.group(1)] = now
        return len(seen) >= 4
    # expected exits at about 0, 1, 3, 7 s (delays 1, 2, 4)
    wait_until(four_exits, timeout=14, interval=0.05,
               what="four exits of /bin/false")
    # watch a little longer: the next restart is due 8 s later, so nothing
    # more may show up now (a tight loop would)
    time.sleep(0.5)
    four_exits()
    elapsed = time.monotonic() - t0
    times = sorted(seen.values())
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) <= 5, "%d restarts in %.1fs: %s" % (len(times), elapsed, gaps)
    assert gaps[0] >= 0.7, gaps
    for a, b in zip(gaps, gaps[1:]):
        assert b >= a * 1.5, "gaps do not grow: %s" % gaps
    delays = [int(m.group(1)) for m in map(re.compile(BACKOFF_RX).search,
                                           inst.log().splitlines()) if m]
    assert delays[:3] == [1, 2, 4], delays
    # the other services are not disturbed
    assert inst.status() == 0
    assert "qmgr" in inst.children().values()


def test_reload_picks_up_master_cf(running):
    # a harmless extra service: a process that only sleeps
    line = "sleeper unix - - n - 1 /bin/sleep 3600"
    sock = running.queue_dir / "private" / "sleeper"
    assert not sock.exists()
    mpid = running.master_pid()

    def sleepers():
        return [p for p, n in child_pids(mpid).items() if n == "sleep"]

    running.add_service(line)
    running.reload()
    running.wait_log(r"reload -- version")
    wait_until(sock.exists, 10, what=str(sock))
    wait_until(sleepers, 10, what="the sleeper process")
    assert running.master_pid() == mpid, "reload must not restart master"

    running.remove_service("sleeper")
    running.reload()
    wait_until(lambda: not sock.exists(), 10, what="%s to go away" % sock)
    wait_until(lambda: not sleepers(), 10, what="the sleeper to exit")
    assert running.status() == 0
    assert "qmgr" in running.children().values()


def test_second_master_is_refused(running):
    mpid = running.master_pid()
    r = running.command("start")
    assert r.returncode != 0
    assert "already running" in r.stderr, r.stderr
    assert len(one_line(r.stderr)) == 1, r.stderr

    env = dict(os.environ, SLUICE_CONFIG=str(running.dir))
    env.pop("SLUICE_READY_FD", None)
    r = subprocess.run([str(MASTER), "-c", str(running.dir), "-f"],
                       capture_output=True, text=True, timeout=15, env=env)
    assert r.returncode != 0
    assert "already running" in r.stderr + running.log(), r.stderr
    assert running.master_pid() == mpid
    assert running.status() == 0


# --- an instance of an ordinary user --------------------------------------

@pytest.fixture
def unix_user():
    """A fresh system user with a home folder; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user (useradd)")
    name = "sltest" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                   check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        # the instance fixture has already stopped and killed its processes
        subprocess.run(["userdel", "-r", name], capture_output=True, timeout=30)


def test_instance_of_an_ordinary_user(unix_user, make_instance, tmp_path_factory):
    import pwd
    pw = pwd.getpwnam(unix_user)
    sluice = SLUICE
    probe = subprocess.run(["runuser", "-u", unix_user, "--", "test", "-x", str(SLUICE)],
                           timeout=30)
    if probe.returncode != 0:
        # The build tree is not open to other users (a clone under /root):
        # give the user a copy of the programs, as an install would.
        copy = Path(tempfile.mkdtemp(prefix="sluice-build-", dir="/tmp"))
        for sub in ("bin", "libexec"):
            shutil.copytree(SLUICE.parent.parent / sub, copy / sub)
        for path in [copy] + list(copy.rglob("*")):
            path.chmod(0o755)
        sluice = copy / "bin" / "sluice"
    inst = make_instance(user=unix_user, path=Path(pw.pw_dir) / "inst", sluice=sluice)
    assert inst.conf_get("mail_owner") == unix_user
    assert os.stat(inst.main_cf).st_uid == pw.pw_uid
    assert os.stat(inst.queue_dir / "incoming").st_uid == pw.pw_uid
    inst.start()
    pids = inst.pids()
    names = {pid: n for pid, n in child_pids(inst.master_pid()).items()}
    assert "qmgr" in names.values(), names
    for pid in pids:
        uids = proc_uids(pid)
        if uids is None:
            continue                    # exited meanwhile
        assert set(uids) == {pw.pw_uid}, "pid %d %s runs as %s" % (
            pid, proc_cmdline(pid), uids)
    if (MASTER.parent / "smtpd").exists():
        code, text = smtp_banner(inst.port)
        assert code == 220, text
    r = inst.stop()
    assert r.returncode == 0, r.stderr
    assert not inst.pids()
    if sluice != SLUICE:
        shutil.rmtree(sluice.parent.parent, ignore_errors=True)
