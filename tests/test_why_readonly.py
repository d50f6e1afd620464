"""test_why_readonly - `sluice why` by a user who may read the status index
but not write its folder, with the events daemon stopped

The index is a write-ahead log (events/index.c): a reader needs
index.sqlite-wal and -shm, which the events daemon keeps while it runs and
removes when it stops; a reader makes them when they are not there. One
that may not (SQLITE_READONLY_DIRECTORY) is told what to do, at once, not
that a crashed batch waits to be rolled back (the rollback journal's
case, gone with WAL).
"""

import os
import subprocess

import pytest

from conftest import LIBEXEC, SLUICE, require, smtp_queue, wait_until


def test_reader_who_cannot_make_wal_and_shm(make_instance, make_sink):
    if os.geteuid() != 0:
        pytest.skip("needs root: the index's folder given to root, why run "
                    "as nobody")
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp",
                                    "events")))
    sink = make_sink()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port, start=True,
                         params={"mynetworks": "127.0.0.0/8",
                                 "events_index_enable": "yes"})
    events = inst.queue_dir / "events"
    db = events / "index.sqlite"
    qid = smtp_queue(inst, "s@src.test", ["ok@dest.test"],
                     b"Subject: why\r\n\r\nhi\r\n")

    def indexed():
        r = inst.command("why", qid)
        return r.returncode == 0 and "delivered" in r.stdout
    wait_until(indexed, 30, what="the delivery indexed")
    assert inst.stop().returncode == 0
    for suffix in ("-wal", "-shm"):
        assert not os.path.exists(str(db) + suffix), suffix
    st = events.stat()
    assert st.st_uid != 0
    # The folder root's (readable, not writable by the mail owner).
    os.chown(events, 0, 0)
    os.chmod(events, 0o755)
    try:
        r = subprocess.run(["runuser", "-u", "nobody", "--", str(SLUICE), "-c",
                            str(inst.dir), "why", qid],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r
        assert "run sluice why as root" in r.stderr, r.stderr
        assert "%s-wal" % db in r.stderr, r.stderr
        assert "rolled back" not in r.stderr, r.stderr
        # root may: SQLite gives the files it makes to the index's owner
        r = inst.command("why", qid)
        assert r.returncode == 0 and "delivered" in r.stdout, r
    finally:
        os.chown(events, st.st_uid, st.st_gid)
        os.chmod(events, st.st_mode & 0o7777)
