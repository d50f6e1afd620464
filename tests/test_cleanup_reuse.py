"""test_cleanup_reuse - an SMTP session's messages share one connection to
cleanup (issue 14, fewer system calls per message)

smtpd keeps cleanup's connection once cleanup has answered a transaction's
END (the "spare", smtpd/smtpd.c) and sends the next transaction's BEGIN
over it: no socket, connect, accept, HELLO or close per message, and no
wake-up of every idle cleanup process on the shared listening socket. The
250 is still cleanup's answer to that message's own END, sent after its
commit. The connections cleanup holds are read from /proc/net/unix: an
accepted socket carries the listener's path, private/cleanup.

- test_session_reuses_one_connection: three messages in one session go
  over one and the same accepted socket (before: a new one per message).
- test_spare_closed_when_idle: a session that sends nothing more gives
  the connection back after SMTPD_CLEANUP_IDLE (2 s): idle SMTP sessions
  do not hold cleanup processes.
- test_cleanup_killed_between_messages: cleanup is SIGKILLed while the
  session holds its spare; the next message gets 250 over a new
  connection, and each message is queued exactly once.
- test_retiring_cleanup_closes_spares: after a reload, the old cleanup
  exits although a session keeps sending messages over its connection
  (it closes a connection once its answer is out), and the session's
  messages all get 250.
"""

import os
import signal
import smtplib
import time

from conftest import pid_alive, wait_until

PARAMS = {"mynetworks": "127.0.0.1/32", "myhostname": "mx.test"}
BODY = b"Subject: reuse\r\n\r\nbody\r\n"


def cleanup_conns(inst):
    """Inodes of the connected sockets cleanup accepted on its listener."""
    path = str(inst.queue_dir / "private" / "cleanup")
    found = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            cols = line.split()
            # Num RefCount Protocol Flags Type St Inode [Path]
            if len(cols) >= 8 and cols[7] == path and cols[5] == "03":
                found.add(cols[6])
    return found


def send(client, n):
    """One message in the open session; its queue ID."""
    code, text = client.mail("s%d@example.test" % n)
    assert code == 250, text
    code, text = client.rcpt("r%d@example.test" % n)
    assert code == 250, text
    code, text = client.data(BODY.replace(b"body", b"body %d" % n))
    assert code == 250, text
    return text.decode().split()[-1]


def queued_ids(inst):
    """Queue IDs of every file in the queue's message directories."""
    ids = []
    for sub in ("incoming", "active", "deferred", "hold"):
        d = inst.queue_dir / sub
        if d.is_dir():
            for _root, _dirs, files in os.walk(d):
                ids += [f for f in files if not f.startswith(".")]
    return ids


def test_session_reuses_one_connection(make_instance):
    inst = make_instance(start=True, params=dict(
        PARAMS, defer_transports="smtp"))
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        send(client, 1)
        first = cleanup_conns(inst)
        assert len(first) == 1, first
        for n in (2, 3):
            send(client, n)
            assert cleanup_conns(inst) == first, \
                "message %d went over another cleanup connection" % n


def test_spare_closed_when_idle(make_instance):
    inst = make_instance(start=True, params=dict(
        PARAMS, defer_transports="smtp"))
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        send(client, 1)
        wait_until(lambda: not cleanup_conns(inst), 10,
                   what="the idle cleanup connection to close")
        assert client.noop()[0] == 250  # the session itself goes on
        send(client, 2)


def test_cleanup_killed_between_messages(make_instance):
    inst = make_instance(start=True, params=dict(
        PARAMS, defer_transports="smtp"))
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        ids = [send(client, 1)]
        assert cleanup_conns(inst)
        old = inst.child("cleanup")
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not pid_alive(old), 10, what="cleanup to die")
        ids.append(send(client, 2))
        ids.append(send(client, 3))
    assert len(set(ids)) == 3
    wait_until(lambda: sorted(queued_ids(inst)) == sorted(ids), 10,
               what="each message queued once: %s" % ids)
    assert "cleanup connection" not in inst.log(), inst.log_tail()


def test_retiring_cleanup_closes_spares(make_instance):
    inst = make_instance(start=True, params=dict(
        PARAMS, defer_transports="smtp"))
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        ids = [send(client, 1)]
        old = inst.child("cleanup")
        inst.reload()
        inst.wait_log(r"reload -- version")
        deadline = time.monotonic() + 10
        n = 2
        # Messages keep coming, more often than the spare's idle time.
        while pid_alive(old) and time.monotonic() < deadline:
            ids.append(send(client, n))
            n += 1
            time.sleep(0.3)
        assert not pid_alive(old), "the retired cleanup still runs"
        ids.append(send(client, n))
    wait_until(lambda: sorted(queued_ids(inst)) == sorted(ids), 10,
               what="each message queued once: %s" % ids)


def test_slow_transaction_outlives_smtpd_timeout(make_instance):
    """smtpd waits for cleanup's answer to BEGIN with smtpd_timeout, then
    turns that read timeout off for the rest of the transaction (cleanup
    says nothing until END). A transaction whose RCPT to end of DATA takes
    longer than smtpd_timeout, the client never idle that long, is queued:
    a timeout turned off once stayed armed in attr_conn (review finding)
    and ended the cleanup connection, so DATA got 451."""
    inst = make_instance(start=True, params=dict(
        PARAMS, defer_transports="smtp", smtpd_timeout="3s"))
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.mail("slow@example.test")
        assert code == 250, text
        code, text = client.rcpt("r@example.test")
        assert code == 250, text
        for _ in range(3):  # 6 s in all, 2 s at a time
            time.sleep(2)
            assert client.noop()[0] == 250
        code, text = client.data(BODY)
        assert code == 250, text
        qid = text.decode().split()[-1]
    assert qid in queued_ids(inst)
