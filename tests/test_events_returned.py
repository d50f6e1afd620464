"""test_events_returned - a returned event is never lost (tracker issue
19: "an event of a message is on disk no later than the queue change it
describes")

The returned event describes the DSN the bounce daemon queued; the bounce
log and the queue file are removed after it. When the journal cannot be
written at that moment, qmgr must keep both until it is: a qmgr killed
-9 meanwhile leaves the message to the next qmgr, which returns it again
and writes the event. The journal fault is tests/faultshim.c in qmgr
(ENOSPC on the journal's writes while a switch file exists); the bounce
daemon is held at its start by a gate file, so the fault begins after
the bounced event was written and before the DSN is out.
"""

import os
import re
import signal

from conftest import LIBEXEC, smtp_queue, wait_until
from test_events import HOST, faulty, journal, need_daemons, shim  # noqa: F401


def test_returned_event_survives_a_kill_during_an_outage(
        make_instance, make_sink, shim, tmp_path):  # noqa: F811
    need_daemons()
    sink = make_sink(rcpt_replies={"gone": "550 5.1.1 no such user"})
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"mynetworks": "127.0.0.0/8",
                                 "myhostname": HOST})
    switch, wrapper = faulty(inst, shim, tmp_path, "qmgr", "write")
    inst.remove_service("qmgr")
    inst.add_service("qmgr       unix  n       -       n       300     1       %s"
                     % wrapper)
    gate = tmp_path / "bounce-go"
    gated = tmp_path / "bounce-gated"
    gated.write_text("#!/bin/sh\n"
                     "n=0\n"
                     "while [ ! -e %s ] && [ $n -lt 600 ]; do\n"
                     "  sleep 0.1; n=$((n+1))\n"
                     "done\n"
                     "exec %s \"$@\"\n" % (gate, LIBEXEC / "bounce"))
    gated.chmod(0o755)
    inst.remove_service("bounce")
    inst.add_service("bounce     unix  -       -       n       -       0       %s"
                     % gated)
    inst.start()
    qid = smtp_queue(inst, "s@src.test", ["gone@dest.test"],
                     b"Subject: r\r\n\r\nbody\r\n")
    wait_until(lambda: any(e["qid"] == qid and e["kind"] == "bounced"
                           for e in journal(inst)),
               timeout=30, what="the bounced event")
    # The journal fails from now on; then the DSN goes out.
    switch.write_text("on")
    gate.write_text("go")
    inst.wait_log(r"bounce.*%s: sender non-delivery notification: " % qid,
                  timeout=30)
    done = re.compile(r"%s: (removed|returned; its event waits for the "
                      r"journal)" % qid)
    wait_until(lambda: done.search(inst.log()), timeout=30,
               what="qmgr's answer to the DSN")
    assert not any(e["kind"] == "returned" for e in journal(inst))
    # Stopped first, so it cannot write the event once the journal is
    # back; the journal mended before it dies, so the qmgr master starts
    # next meets a healthy journal (unlinking after the kill let a busy
    # machine start a qmgr that returned the message once more, still
    # failing: a third DSN).
    pid = inst.child("qmgr")
    os.kill(pid, signal.SIGSTOP)
    switch.unlink()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: inst.child("qmgr") != pid, 30, what="a new qmgr")
    # The next qmgr returns the message again and writes the event.
    wait_until(lambda: any(e["qid"] == qid and e["kind"] == "returned"
                           for e in journal(inst)),
               timeout=60, what="the returned event of %s" % qid)
    inst.wait_log(r"%s: removed" % qid, timeout=30)
    assert not list((inst.queue_dir / "bounce").rglob(qid))
    returned = [e for e in journal(inst)
                if e["qid"] == qid and e["kind"] == "returned"]
    assert len(returned) == 1 and returned[0]["sender"] == "s@src.test"
    # Not delivered again: only the DSN was repeated (at least once): at
    # most two DSNs were made (the killed qmgr's and the next one's). The
    # first may reach the sink twice: its own delivery, by the killed
    # qmgr, could not be recorded while the journal failed (its delivered
    # event and done mark wait for the journal), so the next qmgr sends
    # it again.
    bounced = [e for e in journal(inst)
               if e["qid"] == qid and e["kind"] == "bounced"]
    assert len(bounced) == 1, bounced
    dsns = [m for m in sink.received() if m.mail_from == ""]
    ids = {re.search(rb"(?im)^Message-ID:\s*(\S+)", m.data).group(1)
           for m in dsns}
    assert 1 <= len(ids) <= 2 and len(dsns) <= 3, dsns
