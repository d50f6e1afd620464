"""test_feedback_mailto - what a forged short mailto unsubscribe costs

Mail to unsubscribe+QID-MAC@domain whose MAC fits nobody makes feedback
look for QID's recipients in the events journal. That search must only
open the segments that may hold QID's delivered event: begun at most
(send_at ahead + queue lifetime) after QID's arrival and last written no
earlier than it; a QID that arrives in the future reads nothing.

A segment feedback must not open is a FIFO in events_directory with a
segment's name (writer pid 1, alive, so no writer's repair opens it):
opening it for reading blocks until a writer comes, so a feedback that
opens it never finishes the mail (no "relay=feedback ... status=sent").
The FIFOs go before the journal itself is read by the test.
"""

import os
import time

from conftest import smtp_queue
from test_track import (HTML, Track, mail_from_outside, message,
                        wait_delivered)

QID_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTVWXY"
DAY = 86400


def qid_at(when, pid=4242):
    """A well-formed queue ID that arrived at Unix time when."""
    def enc(value, count):
        return "".join(QID_ALPHABET[(value >> (5 * (count - 1 - i))) & 31]
                       for i in range(count))
    return enc(int(when), 7) + enc(123456, 4) + enc(pid, 5)


def fifo_segment(inst, start, mtime=None):
    """A FIFO named as a segment begun at Unix time start (pid 1), the
    journal's like its segments."""
    name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(start)) + \
        ".000000Z-1-qmgr.jsonl"
    top = inst.queue_dir / "events"
    path = top / name
    os.mkfifo(path, 0o600)
    # the journal's owner (mail_owner): feedback may open it
    os.chown(path, top.stat().st_uid, top.stat().st_gid)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def forged(track, qid, count):
    """Mail from an outsider to qid's short mailto with a MAC that fits
    nobody; waits until feedback is done with it (the count-th)."""
    code, text = mail_from_outside(
        track.inst, "mallory@evil.test",
        "unsubscribe+%s-%s@verp.test" % (qid.lower(), "a" * 20),
        b"From: <mallory@evil.test>\r\nSubject: unsubscribe\r\n\r\nx\r\n")
    assert code == 250, text
    track.inst.wait_log(r"relay=feedback, .*status=sent", count=count,
                        timeout=30)


def make_track(make_instance, make_sink):
    return Track(make_instance, make_sink, mynetworks="127.0.0.1/32",
                 bounce_verp_domain="verp.test",
                 unsubscribe_mailto_domain=None)


def test_forged_mailto_old_or_future_qid_reads_no_journal(make_instance,
                                                          make_sink):
    """A QID older than the window (60 days: its delivery would be long
    over) or one that arrives in the future (an hour ahead): feedback
    opens no segment, not even one begun now; the mail is recorded as
    not verified."""
    track = make_track(make_instance, make_sink)
    now = time.time()
    fifos = [fifo_segment(track.inst, now)]
    try:
        forged(track, qid_at(now - 60 * DAY), 1)
        forged(track, qid_at(now + 3600), 2)
    finally:
        for path in fifos:
            path.unlink()
    assert len(track.inst.wait_log(
        r"unparseable unsubscribe to <unsubscribe\+.*not verified",
        count=2)) == 2


def test_forged_mailto_opens_only_segments_in_window(make_instance,
                                                     make_sink):
    """A recent QID: the journal is read, but not a segment begun after
    the window (40 days after the arrival) nor one last written before
    the arrival (2020). A real message's QID: its recipient is found in
    the journal (the MAC fits it not); a QID the journal does not know:
    every segment in the window is read and the old one passed over."""
    track = make_track(make_instance, make_sink)
    html_part = "Content-Type: text/html\n\n" + HTML
    qid = smtp_queue(track.inst, "shop@%s" % track.origin, ["ann@rcpt.test"],
                     message(track.origin, html_part,
                             "X-Sluice-List: news\r\n"))
    track.sink.wait_messages(1)
    wait_delivered(track, [qid])
    now = time.time()
    old = time.mktime((2020, 1, 1, 0, 0, 0, 0, 0, 0))
    fifos = [fifo_segment(track.inst, now + 40 * DAY),
             fifo_segment(track.inst, old, mtime=old)]
    try:
        forged(track, qid, 1)
        track.inst.wait_log(r"unparseable unsubscribe to <unsubscribe\+"
                            r"%s-.*fits no recipient the journal names"
                            % qid.lower())
        forged(track, qid_at(now - 5), 2)
        track.inst.wait_log(r"unparseable unsubscribe to <unsubscribe\+"
                            r"%s-.*not verified" % qid_at(now - 5).lower())
    finally:
        for path in fifos:
            path.unlink()
