"""test_events_export_positions - exporters at different positions in one
events daemon, across a kill -9 (tracker issues 19 and 14)

The events daemon reads the journal once for the exporters at the same
position and writes their position files together, at most once a second
(events/exporter.c). What must hold: an exporter whose sink fails keeps
its position file where its sink left it (nothing it did not deliver is
behind the file), while another exporter advances; after a kill -9 of
the daemon, mid-stream, each resumes from its own file, and each receiver
gets every event of the journal (repeats only of ids).
"""

import json
import os
import signal

import pytest

from conftest import pid_alive, wait_until

from test_events_export import (events_dir, export_instance, journal_ids,
                                need, receivers, segments, send,
                                status)  # noqa: F401


def position(inst, name):
    """The exporter's position file as (floor, {segment: offset}); None:
    no file (nothing exported)."""
    path = events_dir(inst) / "exporters" / (name + ".pos")
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    lines = text.splitlines()
    assert lines[0] == "sluice-events-position 1", text
    floor = lines[1].split(" ", 1)[1]
    offsets = {}
    for line in lines[2:]:
        _, seg, off = line.split(" ")
        offsets[seg] = int(off)
    return (None if floor == "-" else floor), offsets


def ids_behind(inst, name):
    """The ids of the journal's events the exporter's position file says
    are exported."""
    pos = position(inst, name)
    if pos is None:
        return set()
    floor, offsets = pos
    ids = set()
    for seg in segments(inst):
        data = seg.read_bytes()
        if floor is not None and seg.name <= floor:
            end = data.rfind(b"\n") + 1
        else:
            end = offsets.get(seg.name, 0)
        for line in data[:end].splitlines():
            ids.add(json.loads(line)["id"])
    return ids


def names(inst):
    return {s["target"]: s["name"] for s in status(inst)}


def test_kill9_with_exporters_at_different_positions(make_instance, make_sink,
                                                     receivers):
    """good delivers, bad fails (503): good's file advances, bad's stays
    behind what bad got (nothing); kill -9 while good streams one event a
    batch and bad catches up: both resume from their own files, and both
    receivers end with every event of the journal."""
    need()
    sink = make_sink()
    good = receivers()
    bad = receivers(mode="fail")
    inst = export_instance(make_instance, sink, [good.url(), bad.url()],
                           events_webhook_batch_size="1",
                           events_webhook_max_age="1h")
    by = names(inst)
    for i in range(4):
        send(inst, ["first%d@dest.test" % i])
    wait_until(lambda: len(journal_ids(inst)) >= 8 and
               journal_ids(inst) <= good.got(), timeout=30,
               what="the first events at the good receiver")
    # good's file catches up (it may lag a second, never lead) ...
    wait_until(lambda: ids_behind(inst, by[good.url()]) ==
               journal_ids(inst), timeout=10, what="good's position saved")
    assert ids_behind(inst, by[good.url()]) <= good.got()
    # ... bad's names nothing exported: its sink took nothing.
    assert bad.requests >= 1 and bad.got() == set()
    assert ids_behind(inst, by[bad.url()]) == set()
    assert {s["target"]: s["backlog_events"]
            for s in status(inst)}[bad.url()] >= 8

    # Mid-stream: more mail, bad's sink back; kill -9 while both move.
    for i in range(8):
        send(inst, ["more%d@dest.test" % i])
    bad.mode = "ok"
    wait_until(lambda: len(good.got()) >= 10 and len(bad.got()) >= 2,
               timeout=30, what="both exporters moving")
    pid = inst.child("events")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10)
    # Neither file is ahead of what its receiver got.
    for recv in (good, bad):
        assert ids_behind(inst, by[recv.url()]) <= recv.got(), recv.url()
    wait_until(lambda: inst.child("events") not in (None, pid), timeout=20,
               what="a new events daemon")
    inst.wait_log(r"status=sent", timeout=30, count=12)
    wait_until(lambda: len(journal_ids(inst)) == 24 and
               journal_ids(inst) <= good.got() and
               journal_ids(inst) <= bad.got(), timeout=60,
               what="every event at both receivers")
    assert good.got() == journal_ids(inst) == bad.got()
    assert good.bad == [] and bad.bad == []
    for recv in (good, bad):
        wait_until(lambda r=recv: ids_behind(inst, by[r.url()]) ==
                   journal_ids(inst), timeout=10,
                   what="both positions saved at the end")


def test_failed_position_save_is_tried_again(make_instance, make_sink,
                                             receivers):
    """A position file that cannot be written (exporters/ not writable for
    the mail owner) is written again once it can be, with no more mail
    coming: the file lags while it fails, then catches up by itself."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the daemons run as the mail owner")
    need()
    sink = make_sink()
    good = receivers()
    inst = export_instance(make_instance, sink, [good.url()])
    name = names(inst)[good.url()]
    send(inst, ["a@dest.test"])
    wait_until(lambda: len(journal_ids(inst)) >= 2 and
               ids_behind(inst, name) == journal_ids(inst), timeout=30,
               what="the first position saved")
    folder = events_dir(inst) / "exporters"
    mode = folder.stat().st_mode
    os.chmod(folder, 0o555)
    try:
        send(inst, ["b@dest.test"])
        wait_until(lambda: len(journal_ids(inst)) >= 4 and
                   journal_ids(inst) <= good.got(), timeout=30,
                   what="the second message's events at the receiver")
        inst.wait_log(r"events\[\d+\]: warning: events: %s: " % name,
                      timeout=10)
        assert ids_behind(inst, name) != journal_ids(inst)
    finally:
        os.chmod(folder, mode)
    wait_until(lambda: ids_behind(inst, name) == journal_ids(inst),
               timeout=10, what="the position saved again, no mail coming")
