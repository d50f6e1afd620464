"""The metrics daemon's journal counters (issue #20): the daemon is a
passive reader of the events framework, so its durable position holds
journal segments back from removal like an exporter's, and its counters
are kept with that position. Stopped (SIGSTOP) while mail flows and a real
exporter (the stats store) passes and would remove segments, it still
counts every event once it resumes; killed (-9) and restarted by master,
its counters go on from where they were, counting what arrived meanwhile
once."""

import json
import os
import signal
import time
import urllib.request

from conftest import LIBEXEC, free_port, require, smtp_queue, wait_until
from test_metrics import scrape, value

BODY = b"Subject: journal\r\n\r\ncounted\r\n"


def metered(make_instance, make_sink):
    """A started instance relaying to a sink, metrics on, the stats store
    on (a real exporter that lets the events daemon remove segments) and
    4 KB journal segments (so they roll, finish and can go)."""
    require(*(LIBEXEC / d for d in ("metrics", "events", "smtp", "qmgr")))
    sink = make_sink()
    port = free_port()
    inst = make_instance(
        relayhost="[127.0.0.1]:%d" % sink.port, start=True,
        params={"mynetworks": "127.0.0.0/8",
                "metrics_listen": "127.0.0.1:%d" % port,
                "events_stats_enable": "yes",
                "events_segment_size": "4096"})
    inst.wait_log(r"metrics\[\d+\]: metrics on 127\.0\.0\.1:%d" % port)
    return inst, sink, port


def exporters(inst):
    """`sluice events status --json`, one object per exporter, by kind."""
    out = inst.check("events", "status", "--json")
    return {o["kind"]: o for o in map(json.loads, out.splitlines())}


def segments(inst):
    return sorted(p.name for p in (inst.queue_dir / "events").glob("*.jsonl"))


def counts(port):
    text = scrape(port)[1]
    return (value(text, "sluice_messages_received_total"),
            value(text, "sluice_deliveries_total", status="delivered",
                  provider="other", pool="other", source_ip="other"))


def send(inst, sink, first, n):
    for i in range(first, first + n):
        smtp_queue(inst, "s@client.test", ["r%d@a.test" % i], BODY)
    sink.wait_messages(first + n, timeout=60)


def test_stopped_metrics_daemon_misses_no_event(make_instance, make_sink):
    """metrics stopped with SIGSTOP; 20 messages flow and the stats
    exporter passes their segments (the events daemon may remove what
    every holder has passed); once resumed, received and delivered are
    21 each. The metrics reader shows in `sluice events status` with a
    backlog while stopped, and segments go once it has caught up."""
    inst, sink, port = metered(make_instance, make_sink)
    send(inst, sink, 0, 1)
    wait_until(lambda: counts(port) == (1, 1), 15, what="the first message")
    wait_until(lambda: "metrics" in exporters(inst), 10,
               what="the metrics reader in events status")
    pid = inst.child("metrics")
    os.kill(pid, signal.SIGSTOP)
    try:
        send(inst, sink, 1, 20)
        # What metrics has not passed (after its floor) must stay.
        floor = exporters(inst)["metrics"]["floor"] or ""
        held = [s for s in segments(inst) if s > floor]
        assert held
        wait_until(lambda: all(("r%d@a.test" % i) in inst.log()
                               for i in range(21)), 30)
        # Restart the journal's writers, so every segment with these
        # events is finished and the stats store can pass it whole.
        for name in ("qmgr", "cleanup"):
            old = inst.child(name)
            os.kill(old, signal.SIGTERM)
            wait_until(lambda: inst.child(name) != old, 20,
                       what="a new %s" % name)
        wait_until(lambda: exporters(inst)["stats"]["backlog_events"] == 0 and
                   exporters(inst)["stats"]["floor"] is not None, 30,
                   what="the stats store to pass the journal")
        behind = exporters(inst)["metrics"]
        assert behind["backlog_events"] >= 40, behind
        # The events daemon looks every second: give it a few looks.
        time.sleep(3)
        gone = [s for s in held if s not in segments(inst)]
        assert not gone, "segments metrics had not read were removed"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: counts(port) == (21, 21), 20,
               what="21 received and 21 delivered counted")
    # Caught up, the reader lets the exporters' segments go.
    wait_until(lambda: not set(held) & set(segments(inst)), 20,
               what="the held segments removed once metrics passed them")
    assert counts(port) == (21, 21)


def test_counters_survive_a_kill(make_instance, make_sink):
    """metrics killed with SIGKILL after 3 messages; 5 more arrive before
    and while master restarts it: the new process serves 8 and 8 (not 0,
    and not only what arrived after its start)."""
    inst, sink, port = metered(make_instance, make_sink)
    send(inst, sink, 0, 3)
    wait_until(lambda: counts(port) == (3, 3), 15, what="3 counted")
    # The state is saved within a tick of the counting.
    old = inst.child("metrics")
    state = list((inst.queue_dir / "events" / "exporters")
                 .glob("metrics-*.state"))
    assert len(state) == 1, state
    wait_until(lambda: '"sluice_messages_received_total"' in
               state[0].read_text() and
               json.loads(state[0].read_text())["series"], 10,
               what="the counters saved")
    os.kill(old, signal.SIGSTOP)
    send(inst, sink, 3, 5)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: inst.child("metrics") != old, 20,
               what="master to start metrics again")
    wait_until(lambda: counts(port) == (8, 8), 20, what="8 and 8 counted")


def test_bad_state_file_is_reported(make_instance, make_sink):
    """A state file that is not ours: logged with its name; the counters
    start at 0 from the position file and count what comes after."""
    inst, sink, port = metered(make_instance, make_sink)
    send(inst, sink, 0, 1)
    wait_until(lambda: counts(port) == (1, 1), 15, what="the first message")
    assert inst.stop().returncode == 0
    state = list((inst.queue_dir / "events" / "exporters")
                 .glob("metrics-*.state"))
    state[0].write_text("{not json")
    inst.start()
    inst.wait_log(r"metrics\[\d+\]: .*metrics-[0-9a-f]+\.state not JSON")
    send(inst, sink, 1, 2)
    wait_until(lambda: counts(port) == (2, 2), 15, what="2 counted afresh")
    wait_until(lambda: json.loads(state[0].read_text())["series"], 10,
               what="the state written again")
