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

The tests need root.
"""

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Instance, LIBEXEC, SLUICE, free_port, one_line, require

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
