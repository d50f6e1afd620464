"""test_agent_reuse - qmgr keeps its connection to the smtp agent

After a DONE, qmgr keeps the connection to an agent whose HELLO said
reuse=1 and sends the next request for that agent over it (no new
connect, no HELLO). An agent may close a kept connection at any time (it
was killed, it retires): that must never cost a delivery, a retry step or
an agent-death count.
"""

import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import LIBEXEC, pid_alive, require, smtp_queue, wait_until
from sink import Sink

BODY = "Subject: reuse\r\n\r\nbody\r\n"


@pytest.fixture(autouse=True)
def _built():
    require(LIBEXEC / "smtp", LIBEXEC / "qmgr")


@pytest.fixture
def relay(make_instance):
    sinks = []

    def make():
        sink = Sink()
        sinks.append(sink)
        inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                             params={"mynetworks": "127.0.0.1/32"},
                             start=True)
        return inst, sink

    yield make
    for sink in sinks:
        sink.stop()


def no_agent_trouble(inst, qid):
    log = inst.log()
    assert "delivery agent died" not in log, log
    assert not re.search(r"%s: .*status=deferred" % qid, log), log


def test_second_delivery_reuses_the_agent_connection(relay):
    """The second message to the same agent goes over the connection the
    first one used: qmgr does not connect to private/smtp again (seen with
    strace on qmgr)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is needed")
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["one@far.test"], BODY)
    sink.wait_messages(1, timeout=30)
    qmgr = inst.child("qmgr")
    out = inst.dir / "qmgr.strace"
    err = inst.dir / "qmgr.strace.err"
    with open(err, "w") as errf:
        tracer = subprocess.Popen(["strace", "-f", "-e", "trace=connect", "-o",
                                   str(out), "-p", str(qmgr)],
                                  stdout=subprocess.DEVNULL, stderr=errf)
    try:
        # strace says "attached" on stderr once it traces (its output
        # file exists before that: no connect seen would prove nothing).
        def attached():
            assert tracer.poll() is None, err.read_text()
            return "Process %d attached" % qmgr in err.read_text()
        wait_until(attached, timeout=20, what="strace attached")
        qid = smtp_queue(inst, "a@src.test", ["two@far.test"], BODY)
        sink.wait_messages(2, timeout=30)
        inst.wait_log(r"%s: to=<two@far\.test>.*status=sent" % qid, timeout=30)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
    traced = out.read_text()
    assert "private/smtp" not in traced, traced
    no_agent_trouble(inst, qid)


def test_agent_killed_between_reused_requests(relay):
    """The agent that holds the kept connection is killed while qmgr is
    stopped, and the next message arrives meanwhile: when qmgr goes on,
    the message is delivered at once, not deferred, and no agent death is
    counted."""
    inst, sink = relay()
    q1 = smtp_queue(inst, "a@src.test", ["one@far.test"], BODY)
    sink.wait_messages(1, timeout=30)
    # qmgr has the agent's result (and the agent is idle) before the kill.
    inst.wait_log(r"%s: removed" % q1, timeout=30)
    qmgr = inst.child("qmgr")
    agent = inst.child("smtp")
    os.kill(qmgr, signal.SIGSTOP)
    try:
        os.kill(agent, signal.SIGKILL)
        qid = smtp_queue(inst, "a@src.test", ["two@far.test"], BODY)
    finally:
        os.kill(qmgr, signal.SIGCONT)
    sink.wait_messages(2, timeout=30)
    inst.wait_log(r"%s: to=<two@far\.test>.*status=sent" % qid, timeout=30)
    no_agent_trouble(inst, qid)


def test_agent_retires_between_reused_requests(relay):
    """sluice reload retires the agent that holds the kept connection; the
    next messages are delivered, none deferred, no agent death."""
    inst, sink = relay()
    smtp_queue(inst, "a@src.test", ["one@far.test"], BODY)
    sink.wait_messages(1, timeout=30)
    old = inst.child("smtp")
    inst.reload()
    qids = [smtp_queue(inst, "a@src.test", ["r%d@far.test" % n], BODY)
            for n in range(3)]
    sink.wait_messages(4, timeout=30)
    for n, qid in enumerate(qids):
        inst.wait_log(r"%s: to=<r%d@far\.test>.*status=sent" % (qid, n),
                      timeout=30)
        no_agent_trouble(inst, qid)
    # One look at /proc (the agent may vanish between two).
    wait_until(lambda: not pid_alive(old), timeout=30,
               what="the retired agent to exit")
