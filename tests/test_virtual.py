"""test_virtual - virtual_alias_maps in cleanup and virtual_alias_domains in
smtpd, over real SMTP (issue 24 item 6)

One started instance (the module's) relays everything to a Sink and maps
recipients through a hash: table built with `sluice map`: one-to-many
expansion, an address that maps to itself among others, "@domain"
catch-alls, a "@domain" result, extension propagation through a chain, a
loop (virtual_alias_recursion_limit) and a value past
virtual_alias_expansion_limit (5 here). The smtpd tests have instances of
their own whose clients are not in mynetworks, so only the destination
decides.
"""

import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (BIN, Instance, LIBEXEC, free_port, require,
                      smtp_submit, wait_until)

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp", "bounce")

VIRTUAL = """\
virt.test          anything (a virtual alias domain for smtpd)
info@virt.test     alice@dest.test, bob@dest.test
alice@dest.test    alice@dest.test, archive@dest.test
@catch.test        catchall@dest.test
chain1@dest.test   chain2@dest.test
chain2@dest.test   final@dest.test
loop1@dest.test    loop2@dest.test
loop2@dest.test    loop1@dest.test
big@dest.test      b1@dest.test b2@dest.test b3@dest.test b4@dest.test b5@dest.test b6@dest.test
joe@dom.test       @other.test
twice@dest.test    x1@dest.test, X1@dest.test,x1@dest.test
"""


def need_daemons():
    require(*(LIBEXEC / d for d in DAEMONS))


def build_table(inst, folder):
    table = Path(folder) / "virtual"
    table.write_text(VIRTUAL)
    inst.check("map", "hash:%s" % table)
    return "hash:%s" % table


@pytest.fixture(scope="module")
def env(request):
    """(instance, sink): one instance for the module."""
    need_daemons()
    import sink as sink_mod
    sink = sink_mod.Sink()
    base = Path(tempfile.mkdtemp(prefix="sluice-va-", dir="/tmp"))
    os.chmod(base, 0o755)
    inst = Instance(base / "i0", free_port(),
                    relayhost="[127.0.0.1]:%d" % sink.port)
    try:
        inst.init()
        inst.conf_set(mynetworks="127.0.0.0/8",
                      recipient_delimiter="+",
                      virtual_alias_maps=build_table(inst, base),
                      virtual_alias_expansion_limit="5")
        assert inst.conf_get("disable_dns_lookups") == "yes"
        inst.start()
        yield inst, sink
    finally:
        complaint = inst.shutdown()
        sink.stop()
        if complaint is None:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


def message(tag):
    return (b"Subject: virtual\r\nMessage-ID: <%d@client.test>\r\n\r\n"
            % time.monotonic_ns() + tag + b"\r\n")


def delivered(sink, marker):
    found = [m for m in sink.received() if marker in m.data]
    return found[0] if len(found) == 1 else None


def queued(inst):
    return [p for q in ("incoming", "active", "deferred", "hold")
            for p in (inst.queue_dir / q).rglob("*")
            if p.is_file() and not p.name.startswith(".")]


def send_ok(inst, sink, rcpts, tag):
    code, text = smtp_submit(inst, "s@client.test", rcpts, message(tag))
    assert code == 250, text
    return wait_until(lambda: delivered(sink, tag), 20, what="the message")


def test_one_to_many_and_self(env):
    """info -> alice, bob; alice -> alice (kept, not looked up again) and
    archive."""
    inst, sink = env
    got = send_ok(inst, sink, ["info@virt.test"], b"one-to-many")
    assert sorted(got.rcpt_tos) == ["alice@dest.test", "archive@dest.test",
                                    "bob@dest.test"]


def test_catchall_and_domain_result(env):
    inst, sink = env
    got = send_ok(inst, sink, ["anyone@catch.test", "joe@dom.test",
                               "plain@dest.test"], b"catchall")
    assert sorted(got.rcpt_tos) == ["catchall@dest.test", "joe@other.test",
                                    "plain@dest.test"]


def test_extension_through_chain(env):
    """chain1+x -> (hit on chain1) chain2+x -> (hit on chain2) final+x."""
    inst, sink = env
    got = send_ok(inst, sink, ["chain1+x@dest.test"], b"extension")
    assert got.rcpt_tos == ["final+x@dest.test"]


def test_duplicates_dropped(env):
    """A value naming one address thrice (any case): queued once."""
    inst, sink = env
    got = send_ok(inst, sink, ["twice@dest.test"], b"dups")
    assert got.rcpt_tos == ["x1@dest.test"]


@pytest.mark.parametrize("rcpt,logged", [
    ("loop1@dest.test", "unreasonable virtual_alias_maps map nesting for"),
    ("big@dest.test", "unreasonable virtual_alias_maps map expansion size"),
])
def test_limits_refuse_message(env, rcpt, logged):
    """A loop passes virtual_alias_recursion_limit, big's six addresses
    virtual_alias_expansion_limit (5): 451 4.3.0 at the end of DATA, nothing
    queued, the reason logged."""
    inst, sink = env
    code, text = smtp_submit(inst, "s@client.test", [rcpt], message(b"limit"))
    assert code == 451, text
    assert text.startswith(b"4.3.0"), text
    inst.wait_log(re.escape(logged) + r" \S+")
    assert queued(inst) == []


def test_original_recipient_in_bounce(env):
    """A virtual alias target that bounces: the DSN names the address the
    client used as Original-Recipient."""
    inst, sink = env
    sink.set_rcpt_reply("bob@dest.test", "550 5.1.1 no such bob")
    try:
        code, text = smtp_submit(inst, "sender@client.test",
                                 ["info@virt.test"], message(b"bounce-orig"))
        assert code == 250, text

        def dsn():
            for m in sink.received():
                if (m.rcpt_tos == ["sender@client.test"] and
                        b"bob@dest.test" in m.data and
                        b"bounce-orig" in m.data):
                    return m
            return None
        got = wait_until(dsn, 30, what="the bounce")
    finally:
        sink.set_rcpt_reply("bob@dest.test", None)
    assert b"Final-Recipient: rfc822; bob@dest.test" in got.data, got.data
    assert b"Original-Recipient: rfc822;info@virt.test" in got.data, got.data


def test_unmapped_virtual_address_bounces(env):
    """sendmail bypasses smtpd: an address of a virtual alias domain that
    no entry maps reaches qmgr as it was and is bounced there with 5.1.1,
    as Postfix's error transport does, never sent out."""
    inst, sink = env
    require(BIN / "sendmail", LIBEXEC / "pickup")
    r = subprocess.run([str(BIN / "sendmail"), "-C", str(inst.dir), "-f",
                        "local-sender@client.test", "nobody@virt.test"],
                       input=b"Subject: unmapped\n\nunmapped-tag\n",
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    inst.wait_log(r"to=<nobody@virt\.test>, .*dsn=5\.1\.1, status=bounced "
                  r"\(User unknown in virtual alias table\)", timeout=20)

    def dsn():
        return [m for m in sink.received()
                if m.rcpt_tos == ["local-sender@client.test"] and
                b"unmapped-tag" in m.data]
    wait_until(dsn, 20, what="the DSN")
    assert not [m for m in sink.received() if "nobody@virt.test" in m.rcpt_tos]


# --- smtpd: virtual_alias_domains ------------------------------------------

def rcpt_replies(inst, rcpts):
    """(code, text) of RCPT TO for each address, in one session."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=20) as s:
        s.ehlo("client.test")
        code, text = s.mail("s@client.test")
        assert code == 250, text
        out = [s.rcpt(r) for r in rcpts]
        s.rset()
    return [(c, t.decode()) for c, t in out]


def test_smtpd_virtual_alias_domains_default(make_instance, tmp_path):
    """The default virtual_alias_domains = $virtual_alias_maps: virt.test
    is a key of the table, so its listed users are accepted from a client
    that may not relay, an unlisted one is refused as Postfix refuses it,
    and another domain is still relay-denied."""
    need_daemons()
    inst = make_instance(params={"mynetworks": "10.99.0.0/16"})
    inst.conf_set(virtual_alias_maps=build_table(inst, tmp_path))
    inst.start()
    got = rcpt_replies(inst, ["info@virt.test", "nobody@virt.test",
                              "x@elsewhere.test"])
    assert got[0][0] == 250, got
    assert got[1] == (550, "5.1.1 <nobody@virt.test>: Recipient address "
                      "rejected: User unknown in virtual alias table"), got
    assert got[2][0] == 554 and "Relay access denied" in got[2][1], got


def test_smtpd_virtual_alias_domains_explicit(make_instance, tmp_path):
    """An explicit list: catch.test, whose "@catch.test" catch-all makes
    every address known; virt.test is then no virtual domain of ours."""
    need_daemons()
    inst = make_instance(params={"mynetworks": "10.99.0.0/16",
                                 "virtual_alias_domains": "catch.test"})
    inst.conf_set(virtual_alias_maps=build_table(inst, tmp_path))
    inst.start()
    got = rcpt_replies(inst, ["whoever@catch.test", "info@virt.test"])
    assert got[0][0] == 250, got
    assert got[1][0] == 554 and "Relay access denied" in got[1][1], got


def test_smtpd_virtual_table_missing(make_instance, tmp_path):
    """virtual_alias_maps names a table whose .db is missing: smtpd still
    greets, and a recipient of a virtual domain gets 451 4.3.0 (not 550)."""
    need_daemons()
    table = tmp_path / "missing"
    inst = make_instance(params={"mynetworks": "10.99.0.0/16",
                                 "virtual_alias_domains": "virt.test",
                                 "virtual_alias_maps": "hash:%s" % table})
    inst.start()
    got = rcpt_replies(inst, ["info@virt.test"])
    assert got[0][0] == 451 and got[0][1].startswith("4.3.0"), got


def test_check_accepts_new_names(make_instance, tmp_path):
    """sluice check knows every new parameter (no "unknown parameter"),
    and conf -d shows compatibility_level's default."""
    need_daemons()
    inst = make_instance()
    inst.conf_set(virtual_alias_maps=build_table(inst, tmp_path),
                  virtual_alias_domains="virt.test",
                  virtual_alias_recursion_limit="100",
                  virtual_alias_expansion_limit="100",
                  mailbox_command="/usr/bin/procmail -a $EXTENSION",
                  sender_dependent_relayhost_maps="inline:{ a@b.test=[relay.test] }",
                  compatibility_level="3.6")
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert "unknown parameter" not in r.stderr, r.stderr
    shown = inst.check("conf", "-d", "compatibility_level").splitlines()
    assert shown[0] == "compatibility_level = 3.6", shown
