"""test_master - master restarts a healthy daemon at once and throttles
only one that fails while starting (issue "Hardening", item 7)

A process is healthy once it has said anything on its status socket
(fd 3; mail_server sends 'A' when it is set up and serving). Master
replaces a healthy process that was killed at once, whatever its age;
it throttles the service (master_backoff_initial, doubling) for a process
that dies young without having said anything, or that fails by itself
(non-zero exit, crash signal) soon after its start.

The services under test are small shell scripts, so each rule is driven
directly; one test kills the real daemons of an instance twice in a row
and needs mail to flow again well before a 60 s back-off would end.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import (LIBEXEC, proc_cmdline, require, smtp_queue, wait_until)

SLOW_BACKOFF = {"master_backoff_initial": "60s", "master_backoff_max": "60s"}


def script(inst, name, body):
    """An executable /bin/sh script in the instance folder; its path."""
    path = inst.dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def never(inst):
    """A FIFO no one ever writes: a script that opens it waits there, in
    the shell itself, until it is killed (a `sleep` child would outlive a
    killed script for a moment, and the instance's stop would find it)."""
    path = inst.dir / "never"
    if not path.exists():
        os.mkfifo(path)
    return path


def script_pids(inst, path):
    """pids of master's children that run the script at path."""
    return sorted(p for p in inst.children()
                  if str(path) in proc_cmdline(p))


def throttled(inst, service):
    return re.findall(r"service %s: process died too quickly" % service,
                      inst.log())


def test_killed_ready_process_is_replaced_at_once(make_instance):
    """A process that said 'A' and then is SIGKILLed, young as it is, is
    replaced at once, and again for its successor (before: throttled for
    master_backoff_initial, 60 s here)."""
    inst = make_instance(params=SLOW_BACKOFF)
    path = script(inst, "ready.sh", "printf A >&3\n: > %s/said.$$\n"
                  "read x < %s\n" % (inst.dir, never(inst)))
    inst.add_service("readysvc unix - - n - 1 %s" % path)
    inst.start()
    for _ in range(3):
        pid = wait_until(lambda: script_pids(inst, path), 10,
                         what="a readysvc process")[0]
        # the script has written its byte before it makes said.PID
        wait_until(lambda: (inst.dir / ("said.%d" % pid)).exists(), 10,
                   what="readysvc to say it is ready")
        os.kill(pid, signal.SIGKILL)
        inst.wait_log(r"process \S+ready.sh pid %d killed by signal 9" % pid)
        wait_until(lambda: script_pids(inst, path)
                   and script_pids(inst, path) != [pid], 20,
                   what="a new readysvc process (not throttled)")
    assert throttled(inst, "readysvc") == []


def test_killed_before_ready_is_throttled(make_instance):
    """A process that never said anything and dies young throttles its
    service, killed or not."""
    inst = make_instance(params=SLOW_BACKOFF)
    path = script(inst, "mute.sh", "read x < %s\n" % never(inst))
    inst.add_service("mutesvc unix - - n - 1 %s" % path)
    inst.start()
    pid = wait_until(lambda: script_pids(inst, path), 10,
                     what="a mutesvc process")[0]
    os.kill(pid, signal.SIGKILL)
    inst.wait_log(r"service mutesvc: process died too quickly, "
                  r"restarting in 60 seconds")
    assert script_pids(inst, path) == []


@pytest.mark.parametrize("status", [1, 0])
def test_ready_then_ending_is_throttled(make_instance, status):
    """A process that said 'A' but then ends by itself at once (exit 1, as
    msg_fatal does, or even exit 0) is throttled, so a daemon that dies
    right after its start cannot spin."""
    inst = make_instance(params={"master_backoff_initial": "1s",
                                 "master_backoff_max": "60s"})
    path = script(inst, "crash.sh", "printf A >&3\nexit %d\n" % status)
    inst.add_service("crashsvc unix - - n - 1 %s" % path)
    inst.start()
    inst.wait_log(r"service crashsvc: process died too quickly, "
                  r"restarting in 2 seconds", timeout=15)
    starts = [line for line in inst.log().splitlines()
              if "died too quickly" in line]
    assert len(starts) <= 3, starts


def test_killed_daemons_serve_again_at_once(make_instance, make_sink):
    """smtpd, cleanup, qmgr and smtp that have served are SIGKILLed all at
    once, twice in a row: mail is accepted and delivered again long before
    the 60 s back-off would have let them back."""
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp")))
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params=SLOW_BACKOFF, start=True)

    def flows(n):
        smtp_queue(inst, "a@client.test", ["b@dest.test"],
                   "Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
        wait_until(lambda: any(b"Subject: m%d\r\n" % n in m.data
                               for m in sink.received()), 20,
                   what="message %d at the sink" % n)

    def submit_soon(n):
        deadline = time.monotonic() + 25
        while True:
            try:
                return flows(n)
            except (OSError, AssertionError, AttributeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    flows(0)
    for round_ in (1, 2):
        victims = {p: n for p, n in inst.children().items()
                   if n in ("smtpd", "cleanup", "qmgr", "smtp")}
        assert len(set(victims.values())) == 4, victims
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        submit_soon(round_)
    assert throttled(inst, r"\S+") == [], inst.log_tail()


@pytest.mark.parametrize("daemon", ["showq", "local"])
def test_stop_while_starting_ends_through_the_loop(make_instance, daemon):
    """A SIGTERM that comes while a daemon still starts (reads main.cf,
    drops privileges) waits until its signal events exist, then ends it
    through its event loop, exit 0. Before, the signal struck wherever the
    daemon was: the valgrind test once saw local die inside malloc while
    reading main.cf, 24 bytes "definitely lost". Here the signal is pending
    before exec, the earliest it can come; the daemon runs by hand, without
    master, listeners or status socket."""
    require(LIBEXEC / daemon)
    inst = make_instance()

    def term_pending():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    env = dict(os.environ, SLUICE_CONFIG=str(inst.dir), SLUICE_LOG_STDERR="1")
    for name in ("SLUICE_SERVICE", "SLUICE_LISTEN_FDS"):
        env.pop(name, None)
    r = subprocess.run([str(LIBEXEC / daemon)], env=env, preexec_fn=term_pending,
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (r.returncode, r.stderr)
