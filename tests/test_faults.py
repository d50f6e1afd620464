"""test_faults - disk faults injected with tests/faultshim.c (issue 6 item 4)

The shim (LD_PRELOAD) makes write/pwrite, fsync/fdatasync or rename fail
with ENOSPC or EIO for files under FAULT_DIR. Here: bin/sendmail with its
maildrop write, fsync or rename failing must exit EX_TEMPFAIL (75) and leave
no file (final or temporary) in maildrop/; once the fault clears the next
message is stored. cleanup, run through a master.cf wrapper that sets
LD_PRELOAD, with its incoming/ queue file write or fsync failing: the SMTP
client gets 451 4.3.0, incoming/ holds nothing (no temporary file either),
and after the fault clears (FAULT_FILE removed) the next message is taken.
"""

import errno
import os
import re
import shutil
import smtplib
import socket
import subprocess

import pytest

from conftest import LIBEXEC, require, wait_until

ROOT = LIBEXEC.parent
SHIM_SRC = ROOT / "tests" / "faultshim.c"
SENDMAIL = ROOT / "bin" / "sendmail"
EX_TEMPFAIL = 75


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """tests/faultshim.c compiled into a temporary .so."""
    cc = shutil.which("cc")
    if cc is None:
        if os.environ.get("CI"):
            pytest.fail("cc is missing: the fault shim cannot be built")
        pytest.skip("cc is missing")
    out = tmp_path_factory.mktemp("shim") / "faultshim.so"
    subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-shared",
                    "-fPIC", "-o", str(out), str(SHIM_SRC), "-ldl"],
                   check=True, timeout=120)
    return _preload_list(cc, out)


def _preload_list(cc, shim_path):
    """What LD_PRELOAD names: the shim, after the sanitizer runtimes when the
    programs are a SANITIZE=1 build (ASan insists on coming first)."""
    libs = []
    ldd = subprocess.run(["ldd", str(SENDMAIL)], capture_output=True,
                         text=True, timeout=30).stdout
    for runtime in ("libasan.so", "libubsan.so"):
        if runtime.split(".")[0] + "." in ldd:
            path = subprocess.run([cc, "-print-file-name=" + runtime],
                                  capture_output=True, text=True,
                                  timeout=30).stdout.strip()
            libs.append(os.path.realpath(path))
    return " ".join(libs + [str(shim_path)])


def _sendmail(inst, env_extra):
    env = dict(os.environ)
    env.pop("SLUICE_CONFIG", None)
    env.update(env_extra)
    return subprocess.run(
        [str(SENDMAIL), "-C", str(inst.dir), "-f", "sender@example.test",
         "rcpt@example.test"],
        input=b"Subject: fault\n\n" + b"line of body\n" * 2000,
        capture_output=True, timeout=60, env=env)


@pytest.mark.parametrize("op", ["write", "fsync", "rename"])
@pytest.mark.parametrize("err", ["ENOSPC", "EIO"])
def test_sendmail_maildrop_fault(make_instance, shim, op, err):
    require(SENDMAIL)
    inst = make_instance(params={"myhostname": "mx.test"})
    maildrop = inst.queue_dir / "maildrop"
    r = _sendmail(inst, {"LD_PRELOAD": str(shim), "FAULT_DIR": str(maildrop),
                         "FAULT_OP": op, "FAULT_ERRNO": err})
    assert r.returncode == EX_TEMPFAIL, \
        "sendmail with %s failing (%s) exited %d: %r" % (
            op, err, r.returncode, r.stderr)
    assert os.listdir(maildrop) == [], \
        "maildrop/ after a failed %s: %r" % (op, os.listdir(maildrop))
    # The message names the step that failed (global/qfile.c).
    assert ": %s: %s" % (op, os.strerror(getattr(errno, err))) in \
        r.stderr.decode(), r.stderr
    # The fault cleared: the next message is stored.
    r = _sendmail(inst, {})
    assert r.returncode == 0, r.stderr
    assert len([f for f in os.listdir(maildrop) if not f.startswith(".")]) == 1


def test_sendmail_directory_fsync_fault(make_instance, shim):
    """The maildrop/ directory fsync fails (the second fsync): exit 75 and
    the already renamed file is taken back."""
    require(SENDMAIL)
    inst = make_instance(params={"myhostname": "mx.test"})
    maildrop = inst.queue_dir / "maildrop"
    r = _sendmail(inst, {"LD_PRELOAD": str(shim), "FAULT_DIR": str(maildrop),
                         "FAULT_OP": "fsync", "FAULT_AFTER": "1",
                         "FAULT_ERRNO": "EIO"})
    assert r.returncode == EX_TEMPFAIL, r.stderr
    assert os.listdir(maildrop) == []
    assert b": directory fsync: Input/output error" in r.stderr, r.stderr


# --- cleanup: queue file write/fsync fails -> 451, nothing visible ----------

CLEANUP = LIBEXEC / "cleanup"


def _faulty_cleanup(inst, shim, tmp_path, op, err):
    """Replace cleanup in master.cf by a wrapper that runs it with the shim;
    returns the switch file (faults fire while it exists)."""
    switch = tmp_path / "fault-on"
    wrapper = tmp_path / "cleanup-faulty"
    incoming = inst.queue_dir / "incoming"
    wrapper.write_text(
        "#!/bin/sh\n"
        "LD_PRELOAD='%s' FAULT_DIR=%s FAULT_OP=%s FAULT_ERRNO=%s FAULT_FILE=%s\n"
        "export LD_PRELOAD FAULT_DIR FAULT_OP FAULT_ERRNO FAULT_FILE\n"
        "exec %s \"$@\"\n" % (shim, incoming, op, err, switch, CLEANUP))
    wrapper.chmod(0o755)
    inst.remove_service("cleanup")
    inst.add_service("cleanup    unix  -       -       n       -       0       %s"
                     % wrapper)
    return switch


def _can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("op", ["write", "fsync"])
@pytest.mark.parametrize("err", ["ENOSPC", "EIO"])
def test_cleanup_queue_file_fault(make_instance, shim, tmp_path, op, err):
    require(CLEANUP, LIBEXEC / "smtpd")
    inst = make_instance(params={"mynetworks": "127.0.0.1/32",
                                 "myhostname": "mx.test"})
    switch = _faulty_cleanup(inst, shim, tmp_path, op, err)
    switch.write_text("on")
    inst.start()
    wait_until(lambda: _can_connect(inst.port), 10, what="smtpd to listen")
    incoming = inst.queue_dir / "incoming"
    body = b"Subject: fault\r\n\r\n" + b"body line\r\n" * 2000
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        assert smtp.mail("s@example.test")[0] == 250
        code = smtp.rcpt("r@example.test")[0]
        if code == 250:
            code, text = smtp.data(body)
        else:
            text = b""
        assert code == 451 and b"4.3.0" in text, \
            "fault %s %s answered %d %r" % (
            op, err, code, text)
        assert os.listdir(incoming) == [], \
            "incoming/ after the fault: %r" % os.listdir(incoming)
    # The log names the step that failed (global/qfile.c).
    inst.wait_log(r"cleanup.*: warning: commit \w+: %s: %s" % (
        op, re.escape(os.strerror(getattr(errno, err)))))
    switch.unlink()
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as smtp:
        smtp.sendmail("s@example.test", ["r@example.test"], body)
