"""test_suppress - the suppression list (issue #22 item 4)

`sluice suppress` on a real instance's SQLite store; mail over SMTP and
the HTTP API to an aiosmtpd sink with some recipients suppressed: only
the others arrive, each dropped one has its `suppressed` event in the
journal and nothing is left in the queue; the events daemon's exporter
turns journal lines (hard bounces, complaints, unsubscribes) into
entries; the API endpoints manage the list per tenant.
"""

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (LIBEXEC, SLUICE, pid_alive, require, smtp_queue,
                      smtp_submit, wait_until)
from test_api import Api, api_request

BODY = b"Subject: hi\r\n\r\nhello\r\n"


def journal(inst):
    events = []
    for seg in sorted((inst.queue_dir / "events").glob("*.jsonl")):
        data = seg.read_bytes()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            events.append(json.loads(line))
    return events


def suppressed_events(inst):
    return [e for e in journal(inst) if e["kind"] == "suppressed"]


def queue_files(inst):
    found = []
    for sub in ("incoming", "active", "deferred", "hold"):
        for root, _, files in os.walk(inst.queue_dir / sub):
            found += [f for f in files]
    return found


def sup(inst, *args):
    return inst.command("suppress", *args)


# --- the command ---------------------------------------------------------

def test_cli_add_check_remove_list(instance):
    """add/check/remove/list on the global list and a tenant's: check exits
    0 with the reason when suppressed, 1 when not; the address is matched
    without regard to case (local part too); a tenant's entry holds only
    for that tenant, a global one for every tenant; remove of an absent
    entry exits 1; list --json has the fields."""
    inst = instance
    r = sup(inst, "check", "Bob@Example.test")
    assert r.returncode == 1 and "not suppressed" in r.stdout, r
    r = sup(inst, "add", "<Bob@Example.TEST>", "--reason", "asked us to stop")
    assert r.returncode == 0, r.stderr
    r = sup(inst, "check", "bob@example.test")
    assert r.returncode == 0 and "asked us to stop" in r.stdout, r
    r = sup(inst, "check", "BOB@EXAMPLE.TEST", "--tenant", "acme")
    assert r.returncode == 0 and "asked us to stop" in r.stdout, r

    inst.check("suppress", "add", "t@example.test", "--tenant", "acme")
    assert sup(inst, "check", "t@example.test", "--tenant",
               "acme").returncode == 0
    assert sup(inst, "check", "t@example.test", "--tenant",
               "other").returncode == 1
    assert sup(inst, "check", "t@example.test").returncode == 1

    got = json.loads(inst.check("suppress", "list", "--json"))["entries"]
    assert {(e["tenant"], e["address"], e["source"]) for e in got} == {
        ("", "bob@example.test", "manual"), ("acme", "t@example.test",
                                             "manual")}
    assert all(e["expires"] is None and e["created"] > 0 for e in got)
    only = json.loads(inst.check("suppress", "list", "--tenant", "acme",
                                 "--json"))["entries"]
    assert [e["address"] for e in only] == ["t@example.test"]
    text = inst.check("suppress", "list")
    assert "bob@example.test - manual" in text and "asked us" in text
    r = json.loads(sup(inst, "check", "bob@example.test", "--json").stdout)
    assert r["suppressed"] is True and r["entry"]["reason"] == \
        "asked us to stop"

    inst.check("suppress", "remove", "BOB@example.test")
    assert sup(inst, "check", "bob@example.test").returncode == 1
    r = sup(inst, "remove", "bob@example.test")
    assert r.returncode == 1 and "not on the global list" in r.stderr, r
    # The tenant's entry is the tenant's to remove.
    assert sup(inst, "remove", "t@example.test").returncode == 1
    inst.check("suppress", "remove", "t@example.test", "--tenant", "acme")
    assert json.loads(inst.check("suppress", "list", "--json")) == {
        "entries": []}


def test_cli_bad_input(instance):
    """Bad address, duration, tenant, reason or usage: one clear line on
    stderr, exit 1 (2 for check), nothing stored."""
    inst = instance
    cases = [
        (("add", "no-at-sign"), 1, "bad address"),
        (("add", "a@"), 1, "bad address"),
        (("add", "a b@x.test"), 1, "bad address"),
        (("add", "a@x.test", "--expires", "5x"), 1, "bad duration"),
        (("add", "a@x.test", "--expires", "0"), 1, "bad duration"),
        (("add", "a@x.test", "--tenant", "no/slash"), 1, "bad tenant"),
        (("add", "a@x.test", "--tenant", ".."), 1, "bad tenant"),
        (("add", "a@x.test", "--tenant", "."), 1, "bad tenant"),
        (("check", "a@x.test", "--tenant", ".."), 2, "bad tenant"),
        (("add", "a@x.test", "--reason", "two\nlines"), 1, "bad reason"),
        (("check", "nope"), 2, "bad address"),
        (("check",), 2, "usage"),
        (("frobnicate", "a@x.test"), 1, "usage"),
        (("list", "a@x.test"), 1, "usage"),
    ]
    for args, code, text in cases:
        r = sup(inst, *args)
        assert r.returncode == code, (args, r)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], (args, r.stderr)
    assert json.loads(inst.check("suppress", "list", "--json")) == {
        "entries": []}


def test_cli_expiry(instance):
    """An entry added with --expires 1s suppresses, then stops at once
    when its time is up (no restart, no cleanup pass needed), and is gone
    from the list."""
    inst = instance
    inst.check("suppress", "add", "short@x.test", "--expires", "1s")
    assert sup(inst, "check", "short@x.test").returncode == 0
    wait_until(lambda: sup(inst, "check", "short@x.test").returncode == 1,
               timeout=20, what="the entry to expire")
    assert json.loads(inst.check("suppress", "list", "--json")) == {
        "entries": []}


# --- cleanup -------------------------------------------------------------

def relay_instance(make_instance, make_sink, params=None):
    require(*(LIBEXEC / d for d in ("smtpd", "cleanup", "qmgr", "smtp")))
    sink = make_sink()
    conf = {"mynetworks": "127.0.0.0/8"}
    conf.update(params or {})
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params=conf)
    return inst, sink


def test_smtp_suppressed_recipient_dropped(make_instance, make_sink):
    """An SMTP message to a suppressed and a normal recipient: 250, only
    the normal one reaches the sink, a durable `suppressed` event (the
    recipient, null tenant, the reason) is in the journal, and no queue
    file is left. A message whose every recipient is suppressed is
    answered 250 and leaves no queue file; the sink gets nothing more."""
    inst, sink = relay_instance(make_instance, make_sink)
    inst.check("suppress", "add", "Gone@Rcpt.test", "--reason", "complained")
    inst.start()
    qid = smtp_queue(inst, "s@sender.test", ["gone@rcpt.test",
                                             "kept@rcpt.test"], BODY)
    got = sink.wait_messages(1)
    assert got[0].rcpt_tos == ["kept@rcpt.test"]
    events = suppressed_events(inst)
    assert len(events) == 1, events
    e = events[0]
    assert (e["qid"], e["recipient"], e["tenant"], e["reason"]) == (
        qid, "gone@rcpt.test", None, "complained")
    assert e["id"].endswith("/%s/suppressed/1" % qid)
    wait_until(lambda: not queue_files(inst), timeout=20,
               what="the queue to empty")

    code, text = smtp_submit(inst, "s@sender.test", ["GONE@rcpt.test"], BODY)
    assert code == 250, text
    assert len(suppressed_events(inst)) == 2
    assert not queue_files(inst)
    inst.wait_log(r"every recipient is suppressed: not queued")
    time.sleep(0.5)
    assert len(sink.received()) == 1


def test_smtp_tenant_entry_does_not_hold_for_smtp(make_instance, make_sink):
    """A tenant's entry does not touch SMTP mail (no tenant): delivered;
    an entry that expired is delivered too."""
    inst, sink = relay_instance(make_instance, make_sink)
    inst.check("suppress", "add", "t@rcpt.test", "--tenant", "acme")
    inst.check("suppress", "add", "e@rcpt.test", "--expires", "1s")
    inst.start()
    wait_until(lambda: sup(inst, "check", "e@rcpt.test").returncode == 1,
               timeout=20, what="the entry to expire")
    smtp_queue(inst, "s@sender.test", ["t@rcpt.test", "e@rcpt.test"], BODY)
    got = sink.wait_messages(1)
    assert sorted(got[0].rcpt_tos) == ["e@rcpt.test", "t@rcpt.test"]
    assert suppressed_events(inst) == []


def test_cleanup_killed_loses_no_normal_recipient(make_instance, make_sink):
    """cleanup killed (-9) between messages and restarted by master: the
    next message, to a suppressed and a normal recipient, still drops the
    one and delivers the other (the list is reopened, nothing cached is
    lost)."""
    inst, sink = relay_instance(make_instance, make_sink)
    inst.check("suppress", "add", "gone@rcpt.test")
    inst.start()
    smtp_queue(inst, "s@sender.test", ["gone@rcpt.test", "a@rcpt.test"], BODY)
    sink.wait_messages(1)
    pid = inst.child("cleanup")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10, what="cleanup to die")
    smtp_queue(inst, "s@sender.test", ["gone@rcpt.test", "b@rcpt.test"], BODY)
    got = sink.wait_messages(2)
    assert [m.rcpt_tos for m in got] == [["a@rcpt.test"], ["b@rcpt.test"]]
    assert len(suppressed_events(inst)) == 2
    wait_until(lambda: not queue_files(inst), timeout=20,
               what="the queue to empty")


def db_path(inst):
    return Path(inst.conf_get("data_directory")) / "suppression" / \
        "list.sqlite"


HOLD_WRITE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO suppress VALUES ('', 'held@rcpt.test', 'r',"
           " 'manual', 1, 0)")
print("held", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def test_cleanup_lookup_while_a_writer_holds_the_list(make_instance,
                                                      make_sink):
    """A writer (as the events daemon's batch does) holds a write
    transaction on the list, as mail_owner, while a fresh cleanup opens
    it for its first lookup: the suppressed recipient is still dropped,
    the other delivered (cleanup opens read-only and takes no write lock;
    it used to run BEGIN IMMEDIATE at open, give up after 5 s, and
    deliver the suppressed address)."""
    inst, sink = relay_instance(make_instance, make_sink)
    inst.check("suppress", "add", "gone@rcpt.test")
    owner = inst.conf_get("mail_owner")
    holder = subprocess.Popen(
        ["runuser", "-u", owner, "--", sys.executable, "-c", HOLD_WRITE,
         str(db_path(inst))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        inst.start()  # cleanup opens the list while the writer holds it
        smtp_queue(inst, "s@sender.test", ["gone@rcpt.test",
                                           "kept@rcpt.test"], BODY)
        got = sink.wait_messages(1)
        assert got[0].rcpt_tos == ["kept@rcpt.test"]
        assert [e["recipient"] for e in suppressed_events(inst)] == [
            "gone@rcpt.test"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert "; not checked" not in inst.log()


def test_cleanup_unreadable_list_defers(make_instance, make_sink):
    """A suppression database that exists but is not a database: the
    message is refused with 451 4.3.0 (the client sends it again), the
    reason is logged, nothing is queued or delivered. A missing database
    is an empty list: mail flows."""
    inst, sink = relay_instance(make_instance, make_sink)
    path = db_path(inst)
    inst.start()
    assert not path.exists()
    smtp_queue(inst, "s@sender.test", ["a@rcpt.test"], BODY)
    sink.wait_messages(1)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"this is not an SQLite database file\n" * 200)
    code, text = smtp_submit(inst, "s@sender.test", ["b@rcpt.test"], BODY)
    assert code == 451 and b"4.3.0" in text, (code, text)
    inst.wait_log(r"to=<b@rcpt\.test>: suppression database .*list\.sqlite"
                  r".*message deferred")
    wait_until(lambda: not queue_files(inst), timeout=20,
               what="the queue to be empty")
    time.sleep(0.5)
    assert len(sink.received()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_cli_as_root_follows_no_link(instance, tmp_path):
    """mail_owner may write in the list's folder: a symbolic link planted
    as list.sqlite-shm or -wal to a file of root's is not followed (the
    file stays root's, unchanged), nor is a hard link given away, by a
    root `sluice suppress add` (it used to chown() each name, and SQLite,
    run as root, opened and fchown()ed them too: the command now works
    as mail_owner); the database itself is still mail_owner's."""
    inst = instance
    owner = pwd.getpwnam(inst.conf_get("mail_owner"))
    inst.check("suppress", "add", "first@x.test")
    path = db_path(inst)
    victims = []
    for name in ("shm", "wal"):
        victim = tmp_path / ("victim-" + name)
        victim.write_text("root's secret\n")
        os.chmod(victim, 0o600)
        os.symlink(victim, "%s-%s" % (path, name))
        victims.append(victim)
    r = sup(inst, "add", "second@x.test")
    for victim in victims:
        st = os.stat(victim)
        assert (st.st_uid, st.st_gid) == (0, 0), (victim, r)
        assert victim.read_text() == "root's secret\n", r
    assert os.stat(path).st_uid == owner.pw_uid
    # a hard link (same file system: the folder's own) to a root file
    for name in ("shm", "wal"):
        os.unlink("%s-%s" % (path, name))
    victim = path.parent / "victim-hard"
    victim.write_text("root's secret\n")
    os.link(victim, str(path) + "-shm")
    r = sup(inst, "add", "third@x.test")
    assert os.stat(victim).st_uid == 0, r


# --- the feed from the journal (events/suppress.c) ------------------------

def now_ts(offset=0):
    t = time.time() + offset
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%06dZ" % int((t % 1) * 1e6)


def dead_pid():
    pid = 4000000
    while os.path.exists("/proc/%d" % pid):
        pid += 1
    return pid


def write_segment(inst, events):
    """A finished journal segment (its writer gone), as global/events.c
    writes them: one compact JSON object a line, named START-PID-PROG."""
    d = inst.queue_dir / "events"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + ".000000Z"
    path = d / ("%s-%d-qmgr.jsonl" % (stamp, dead_pid()))
    tmp = d / ".tmp-segment"
    tmp.write_bytes(b"".join(json.dumps(e, separators=(",", ":")).encode() +
                             b"\n" for e in events))
    st = os.stat(d)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.rename(tmp, path)
    return path


def event(kind, qid, seq, rcpt, tenant=None, **kw):
    e = {"id": "node.test/%s/%s/%s" % (qid, kind, seq), "ts": now_ts(),
         "kind": kind, "qid": qid, "recipient": rcpt, "tenant": tenant,
         "pool": None, "source_ip": None, "provider": None,
         "trace_id": None}
    e.update(kw)
    return e


def entries(inst, *args):
    return {(e["tenant"], e["address"]): e for e in
            json.loads(inst.check("suppress", "list", "--json",
                                  *args))["entries"]}


def test_feed_from_journal_lines(make_instance):
    """Journal lines (written as a finished segment of the real journal
    directory) become entries: a hard bounce of a listed category for
    tenant acme (source hard_bounce, expiring suppression_bounce_expiry
    after the event), a complaint without tenant (global, never
    expires), an unsubscribe from a list; a soft bounce, a hard bounce of
    another category and a delivered event do not, nor does a hard bounce
    older than the expiry (the rule expires it at once). Only acme's mail
    is suppressed by acme's entry."""
    require(LIBEXEC / "events")
    inst = make_instance(params={"suppression_feedback_enable": "yes",
                                 "suppression_bounce_expiry": "7d"})
    inst.start()
    write_segment(inst, [
        event("bounced", "Q1", "100", "Hard@Rcpt.test", "acme", hard=True,
              category="user_unknown", async_=False,
              reply="550 5.1.1 <hard@rcpt.test>: no such user"),
        event("bounced", "Q1", "200", "soft@rcpt.test", "acme", hard=False,
              category="mailbox_full", reply="452 4.2.2 full"),
        event("bounced", "Q1", "300", "policy@rcpt.test", "acme", hard=True,
              category="policy", reply="550 5.7.1 blocked"),
        event("delivered", "Q1", "400", "ok@rcpt.test", "acme"),
        event("complained", "Q2", "0", "angry@rcpt.test",
              feedback_type="abuse"),
        event("unsubscribed", "Q3", "0", "bye@rcpt.test", "beta",
              list="news"),
        # A hard bounce of 8 days ago has already expired by the rule.
        dict(event("bounced", "Q4", "100", "old@rcpt.test", "acme",
                   hard=True, category="user_unknown"), ts=now_ts(-8 * 86400)),
    ])
    got = wait_until(lambda: len(entries(inst)) == 3 and entries(inst),
                     timeout=20, what="three entries from the journal")
    hard = got[("acme", "hard@rcpt.test")]
    assert hard["source"] == "hard_bounce"
    assert hard["reason"].startswith("hard bounce (user_unknown): 550 5.1.1")
    assert hard["expires"] == hard["created"] + 7 * 86400
    angry = got[("", "angry@rcpt.test")]
    assert (angry["source"], angry["expires"]) == ("complaint", None)
    assert "abuse" in angry["reason"]
    bye = got[("beta", "bye@rcpt.test")]
    assert bye["source"] == "unsubscribe" and "news" in bye["reason"]
    assert sup(inst, "check", "hard@rcpt.test", "--tenant",
               "acme").returncode == 0
    assert sup(inst, "check", "hard@rcpt.test", "--tenant",
               "beta").returncode == 1
    assert sup(inst, "check", "old@rcpt.test", "--tenant",
               "acme").returncode == 1
    assert sup(inst, "check", "angry@rcpt.test", "--tenant",
               "beta").returncode == 0
    # Its position is durable: a restart adds nothing twice, loses nothing.
    inst.stop()
    inst.check("suppress", "remove", "angry@rcpt.test")
    inst.start()
    time.sleep(2)
    assert ("", "angry@rcpt.test") not in entries(inst)


def exporters_past(inst, seg):
    """The exporters of `sluice events status --json` once each has read
    seg to its end (a floor at or after it, no backlog), else None."""
    objs = [json.loads(line) for line in
            inst.check("events", "status", "--json").splitlines()[1:]]
    done = all(o["backlog_events"] == 0 and (o["floor"] or "") >= seg.name
               for o in objs)
    return [o["kind"] for o in objs] if done else None


def test_feed_on_by_default(make_instance):
    """Issue 22: with no parameter set, a complaint in the journal puts the
    recipient on the (global) list: the feed is on by default."""
    require(LIBEXEC / "events")
    inst = make_instance(start=True)
    write_segment(inst, [event("complained", "Q2", "0", "angry@rcpt.test")])
    wait_until(lambda: ("", "angry@rcpt.test") in entries(inst), timeout=20,
               what="the complaint's entry")
    assert sup(inst, "check", "angry@rcpt.test").returncode == 0


def test_feed_off_adds_nothing(make_instance):
    """With suppression_feedback_enable = no the same complaint line adds
    no entry (and the database is not even made), though the events
    daemon has read it (the status index, still on, is past it)."""
    require(LIBEXEC / "events")
    inst = make_instance(start=True,
                         params={"suppression_feedback_enable": "no"})
    seg = write_segment(inst, [event("complained", "Q2", "0",
                                     "angry@rcpt.test")])
    kinds = wait_until(lambda: exporters_past(inst, seg), timeout=20,
                       what="the events daemon past the segment")
    assert kinds == ["index"]
    time.sleep(1.5)
    assert sup(inst, "check", "angry@rcpt.test").returncode == 1
    assert not (inst.dir / "data" / "suppression" / "list.sqlite").exists()


def test_feed_end_to_end_hard_bounce(make_instance, make_sink):
    """END TO END: a message the sink refuses with 550 5.1.1 user unknown
    bounces; the bounced event (hard, user_unknown) becomes a hard_bounce
    entry, and the next message to that address is dropped as
    suppressed. A bounced event without its "hard" field fails."""
    inst, sink = relay_instance(make_instance, make_sink, params={
        "suppression_feedback_enable": "yes"})
    sink.set_rcpt_reply("nobody@rcpt.test",
                        "550 5.1.1 <nobody@rcpt.test>: user unknown")
    inst.start()
    smtp_queue(inst, "s@sender.test", ["nobody@rcpt.test"], BODY)
    bounced = wait_until(
        lambda: [e for e in journal(inst) if e["kind"] == "bounced"
                 and e["recipient"] == "nobody@rcpt.test"] or None,
        timeout=30, what="the bounced event")[0]
    assert bounced.get("hard") is True, bounced
    wait_until(lambda: sup(inst, "check", "nobody@rcpt.test").returncode == 0,
               timeout=20, what="the hard bounce's entry")
    smtp_queue(inst, "s@sender.test", ["nobody@rcpt.test", "ok@rcpt.test"],
               BODY)
    # the sink also gets the first message's DSN (to s@sender.test)
    wait_until(lambda: [m for m in sink.received()
                        if "ok@rcpt.test" in m.rcpt_tos] or None,
               timeout=20, what="the second message at the sink")
    tos = [m.rcpt_tos for m in sink.received()
           if "ok@rcpt.test" in m.rcpt_tos]
    assert tos == [["ok@rcpt.test"]], tos
    assert wait_until(lambda: [e for e in journal(inst)
                               if e["kind"] == "suppressed"] or None,
                      timeout=20, what="the suppressed event")


# --- the HTTP API ----------------------------------------------------------

def test_api_post_reports_suppressed(make_instance, make_sink):
    """POST /v1/messages for tenant acme to a globally suppressed, an
    acme-suppressed, a beta-suppressed and a normal recipient: 202 lists
    the two that hold for acme with their reasons; the sink gets the other
    two; suppressed events carry tenant acme. A message whose every
    recipient is suppressed is 202 with them listed and leaves no queue
    file."""
    api = Api(make_instance, make_sink)
    inst = api.inst
    inst.check("suppress", "add", "g@rcpt.test", "--reason", "global one")
    inst.check("suppress", "add", "a@rcpt.test", "--tenant", "acme",
               "--reason", "acme one")
    inst.check("suppress", "add", "b@rcpt.test", "--tenant", "beta")
    status, answer, _ = api.post({
        "from": "shop@sender.test",
        "to": ["g@rcpt.test", "A@rcpt.test", "b@rcpt.test", "n@rcpt.test"],
        "subject": "hi", "text": "hello"})
    assert status == 202, answer
    assert sorted((s["address"], s["reason"]) for s in answer["suppressed"]) \
        == [("A@rcpt.test", "acme one"), ("g@rcpt.test", "global one")]
    assert "suppressed_count" not in answer
    got = api.sink.wait_messages(1)
    assert sorted(got[0].rcpt_tos) == ["b@rcpt.test", "n@rcpt.test"]
    events = suppressed_events(inst)
    assert sorted(e["recipient"] for e in events) == ["A@rcpt.test",
                                                      "g@rcpt.test"]
    assert {e["tenant"] for e in events} == {"acme"}
    assert all(e["qid"] == answer["id"] for e in events)

    status, answer, _ = api.post({
        "from": "shop@sender.test", "to": ["g@rcpt.test"],
        "subject": "hi", "text": "hello"})
    assert status == 202, answer
    assert [s["address"] for s in answer["suppressed"]] == ["g@rcpt.test"]
    wait_until(lambda: not api.queued(), timeout=20, what="an empty queue")
    time.sleep(0.5)
    assert len(api.sink.received()) == 1


def test_api_endpoints_and_tenant_isolation(make_instance, make_sink):
    """PUT/GET/DELETE /v1/suppressions/ADDRESS and GET /v1/suppressions:
    a send key manages its own tenant's list; its entry holds for its mail
    and not for tenant beta's; an admin key works on the global list (or
    ?tenant=), and a global entry holds for everyone; a read-only key may
    GET but not PUT; bad addresses, reasons and expiries are 400 JSON
    errors; a tenant cannot name another's list."""
    api = Api(make_instance, make_sink)
    inst = api.inst
    acme = api.create_key("acme", "--scope", "send,read")
    beta = api.create_key("beta", "--scope", "send,read")
    reader = api.create_key("acme", "--scope", "read")
    admin = api.create_key("ops", "--scope", "admin")
    port = api.port

    def call(method, path, key, body=None):
        return api_request(port, method, path, body, key=key)

    s, a, _ = call("PUT", "/v1/suppressions/X%40Rcpt.test", acme,
                   {"reason": "asked", "expires": "7d"})
    assert s == 200, a
    assert (a["address"], a["tenant"], a["source"], a["reason"]) == (
        "x@rcpt.test", "acme", "api", "asked")
    assert a["expires"] - a["created"] in range(7 * 86400 - 1, 7 * 86400 + 2)
    assert sup(inst, "check", "x@rcpt.test", "--tenant", "acme").returncode == 0
    assert sup(inst, "check", "x@rcpt.test", "--tenant", "beta").returncode == 1
    s, a, _ = call("GET", "/v1/suppressions/x@rcpt.test", acme)
    assert s == 200 and a["tenant"] == "acme", a
    s, a, _ = call("GET", "/v1/suppressions/x@rcpt.test", beta)
    assert s == 404 and a["error"]["code"] == "not_found", a
    s, a, _ = call("GET", "/v1/suppressions", beta)
    assert s == 200 and a["suppressions"] == [] and a["tenant"] == "beta", a
    s, a, _ = call("GET", "/v1/suppressions", reader)
    assert s == 200 and [e["address"] for e in a["suppressions"]] == [
        "x@rcpt.test"], a
    s, a, _ = call("PUT", "/v1/suppressions/y@rcpt.test", reader, {})
    assert s == 403, a
    s, a, _ = call("GET", "/v1/suppressions?tenant=acme", beta)
    assert s == 403, a

    # Tenant isolation in the mail itself.
    s, a, _ = api_request(port, "POST", "/v1/messages", {
        "from": "shop@sender.test", "to": ["x@rcpt.test"],
        "subject": "b", "text": "b"}, key=beta)
    assert s == 202 and "suppressed" not in a, a
    s, a, _ = api.post({"from": "shop@sender.test", "to": ["x@rcpt.test"],
                        "subject": "a", "text": "a"})
    assert s == 202 and [x["address"] for x in a["suppressed"]] == [
        "x@rcpt.test"], a
    got = api.sink.wait_messages(1)
    assert got[0].rcpt_tos == ["x@rcpt.test"]

    # The admin's global entry holds for beta too.
    s, a, _ = call("PUT", "/v1/suppressions/z@rcpt.test", admin,
                   {"reason": "global"})
    assert s == 200 and a["tenant"] == "", a
    s, a, _ = call("GET", "/v1/suppressions/z@rcpt.test", beta)
    assert s == 200 and a["tenant"] == "" and a["reason"] == "global", a
    s, a, _ = api_request(port, "POST", "/v1/messages", {
        "from": "shop@sender.test", "to": ["z@rcpt.test", "ok@rcpt.test"],
        "subject": "b", "text": "b"}, key=beta)
    assert s == 202 and [x["address"] for x in a["suppressed"]] == [
        "z@rcpt.test"], a
    got = api.sink.wait_messages(2)
    assert got[1].rcpt_tos == ["ok@rcpt.test"]
    # A tenant cannot remove the global entry; the admin can.
    s, a, _ = call("DELETE", "/v1/suppressions/z@rcpt.test", beta)
    assert s == 404, a
    s, a, _ = call("GET", "/v1/suppressions?tenant=acme", admin)
    assert s == 200 and len(a["suppressions"]) == 1, a
    s, a, _ = call("DELETE", "/v1/suppressions/z@rcpt.test", admin)
    assert s == 200 and a == {"deleted": True}, a
    s, a, _ = call("DELETE", "/v1/suppressions/x@rcpt.test", acme)
    assert s == 200, a
    assert sup(inst, "check", "x@rcpt.test", "--tenant", "acme").returncode == 1

    for path, body, code in [
            ("/v1/suppressions/not-an-address", {}, "invalid_address"),
            ("/v1/suppressions/a@b.test", {"reason": "x\ny"}, "invalid_field"),
            ("/v1/suppressions/a@b.test", {"expires": "5x"}, "invalid_field"),
            ("/v1/suppressions/a@b.test", {"expires": 0}, "invalid_field"),
            ("/v1/suppressions/a@b.test", [1], "invalid_json")]:
        s, a, _ = call("PUT", path, acme, body)
        assert s == 400 and a["error"]["code"] == code, (path, body, a)
    s, a, _ = call("POST", "/v1/suppressions", acme, {})
    assert s == 405, a
    s, a, _ = call("GET", "/v1/suppressions", None)
    assert s == 401, a
