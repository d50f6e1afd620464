"""test_smtpd_fdlimit - smtpd at its descriptor limit

accept() failing with EMFILE left the listener readable, so smtpd retried at
once: ~190,000 "accept: Too many open files" lines a second at 100% CPU.
Now it turns the waiting clients away (421, through a spare descriptor),
pauses its listeners, warns at most once per interval, goes on serving the
sessions it has, and takes new clients again once descriptors are free.
The limit is set on the running smtpd with prlimit(1).
"""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import require_daemon, wait_until


def cpu_ticks(pid):
    """utime + stime of pid, in clock ticks."""
    data = open("/proc/%d/stat" % pid).read()
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def connect(inst, timeout=2.0):
    sock = socket.create_connection(("127.0.0.1", inst.port), timeout=timeout)
    return sock


def banner(sock):
    """The greeting line, or None when none came in the socket's timeout."""
    data = b""
    try:
        while not data.endswith(b"\r\n"):
            got = sock.recv(512)
            if not got:
                break
            data += got
    except socket.timeout:
        return None
    return data.decode(errors="replace")


def noop(sock):
    sock.sendall(b"NOOP\r\n")
    return banner(sock)


def test_accept_at_fd_limit_backs_off_and_recovers(make_instance):
    require_daemon("smtpd")
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit not installed")
    inst = make_instance(params={"myhostname": "mx.test",
                                 "smtpd_client_connection_count_limit": "0"},
                         start=True)
    first = connect(inst)
    assert banner(first).startswith("220 ")
    pid = inst.child("smtpd")
    nfd = len(os.listdir("/proc/%d/fd" % pid))
    limit = nfd + 4
    # As smtpd's own user: root without CAP_SYS_RESOURCE (a container) may
    # not change another user's limits, and smtpd runs as mail_owner.
    st = os.stat("/proc/%d" % pid)
    subprocess.run(["setpriv", "--reuid=%d" % st.st_uid, "--regid=%d" % st.st_gid,
                    "--clear-groups", "prlimit", "--pid", str(pid),
                    "--nofile=%d:%d" % (limit, limit)], check=True)

    # Fill the table: clients that get a greeting until one does not.
    served = [first]
    waiting = []                # [(socket, what it has said so far)]
    for _ in range(12):
        # A greeting that is only slow (a loaded machine) is not the limit:
        # wait long enough for the 220 or the 421 of the spare descriptor.
        sock = connect(inst, timeout=10.0)
        text = banner(sock)
        if text is None or not text.startswith("220 "):
            waiting.append((sock, text))
            break
        served.append(sock)
    assert waiting, "smtpd never reached its descriptor limit"
    assert len(served) >= 2
    for _ in range(5):
        waiting.append((connect(inst, timeout=1.0), None))

    # At the limit: little log, little CPU.
    before = len(re.findall(r"accept", inst.log()))
    ticks = cpu_ticks(pid)
    time.sleep(2.0)
    spent = cpu_ticks(pid) - ticks
    time.sleep(1.0)
    lines = len(re.findall(r"accept", inst.log())) - before
    assert lines < 50, "%d accept lines in 3 s" % lines
    assert spent < 0.25 * 2.0 * os.sysconf("SC_CLK_TCK"), \
        "smtpd used %d ticks of CPU in 2 s" % spent

    # The sessions in hand are served.
    for sock in served:
        assert noop(sock).startswith("250 ")
    # Those that waited were told to come back (421), not left hanging.
    for sock, text in waiting:
        sock.settimeout(5.0)
        text = text or banner(sock)
        assert text is not None and text.startswith("421 4.3.2 mx.test "), text
        sock.close()
    inst.wait_log(r"warning: accept: Too many open files")

    # Room again: new clients are served.
    for sock in served[1:]:
        sock.close()

    def greeted():
        sock = connect(inst, timeout=2.0)
        try:
            text = banner(sock)
            return text is not None and text.startswith("220 ")
        finally:
            sock.close()
    wait_until(greeted, timeout=10, interval=0.3,
               what="a new client to be greeted")
    assert noop(served[0]).startswith("250 ")
    served[0].close()
