"""test_smtpd_access - smtpd's access restrictions over real loopback sockets

One instance serves the whole module, configured so that every scenario
lives side by side, told apart by the client's loopback source address:

  127.0.0.1        refused by check_client_access (its own address)
  127.0.0.2        deferred by check_client_access (the prefix 127.0.0)
  127.0.1.x        passes the client list (the prefix 127.0.1 is OK)
  127.0.1.3        in mynetworks through a texthash: table
  127.0.3.x        reaches a check_client_access table that cannot be read

Senders, recipients and local users are checked by access tables (inline:,
texthash:, hash: built by `sluice map`) and by local_recipient_maps.
Clients are smtplib, as real clients are.
"""

import os
import shutil
import smtplib
import tempfile
from pathlib import Path

import pytest

from conftest import LIBEXEC, Instance, free_port, require

DAEMONS = ("master", "smtpd", "cleanup", "qmgr")

CLIENT_ACCESS = ("inline:{ { 127.0.0.1 = REJECT go away }, "
                 "{ 127.0.0 = 450 4.7.9 prefix deferred }, 127.0.1=OK }")
SENDER_ACCESS = ("inline:{ { spam@bad.test = REJECT No spam please }, "
                 "{ slow.test = DEFER come back later } }")


class AccessInstance(Instance):
    """An Instance whose daemons tell LeakSanitizer (SANITIZE=1) that
    Berkeley DB keeps the handle of a table it found corrupt: smtpd closes
    the broken table at exit, and libdb cannot free it then."""

    suppressions = None

    def _env(self):
        env = super()._env()
        if self.suppressions:
            opts = env.get("LSAN_OPTIONS", "")
            env["LSAN_OPTIONS"] = (opts + ":" if opts else "") + \
                "suppressions=%s:print_suppressions=0" % self.suppressions
        return env


@pytest.fixture(scope="module")
def inst():
    """The instance, started, for the whole module."""
    require(*(LIBEXEC / d for d in DAEMONS))
    base = Path(tempfile.mkdtemp(prefix="sluice-ac-", dir="/tmp"))
    os.chmod(base, 0o755)  # the daemons run as nobody under root
    tables = base / "tables"
    tables.mkdir()
    (tables / "nets").write_text("127.0.1.3 ok\n")
    (tables / "relay").write_text("hashrelay.test OK\n")
    (tables / "users").write_text("alice x\n")
    (tables / "broken").write_text("".join("127.0.%d.%d OK\n" % (i, j)
                                           for i in range(2) for j in range(60)))
    (base / "lsan.supp").write_text("leak:libdb-5.3.so\n")
    inst = AccessInstance(base / "i0", free_port())
    inst.suppressions = base / "lsan.supp"
    try:
        inst.init()
        inst.check("map", "hash:%s" % (tables / "relay"))
        inst.check("map", "hash:%s" % (tables / "broken"))
        corrupt_db(tables / "broken.db")
        inst.conf_set(
            myhostname="mx.test",
            mydestination="$myhostname, localhost",
            mynetworks="192.0.2.0/24, texthash:%s" % (tables / "nets"),
            relay_domains="hash:%s" % (tables / "relay"),
            local_recipient_maps="texthash:%s" % (tables / "users"),
            smtpd_client_restrictions="check_client_access %s, "
            "check_client_access hash:%s" % (CLIENT_ACCESS, tables / "broken"),
            smtpd_sender_restrictions="check_sender_access %s" % SENDER_ACCESS,
            smtpd_relay_restrictions="permit_mynetworks, check_recipient_access"
            " inline:{ outside.test=OK }, reject_unauth_destination")
        assert inst.conf_get("disable_dns_lookups") == "yes"
        inst.start()
        yield inst
    finally:
        complaint = inst.shutdown()
        if complaint is None:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("instance kept under %s: %s" % (base, complaint))


def corrupt_db(path):
    """Overwrite every page of a Berkeley DB file but the first (the meta
    page): the table still opens, and every lookup in it fails."""
    data = path.read_bytes()
    assert len(data) > 4096, "table %s too small to corrupt" % path
    path.write_bytes(data[:4096] + b"\xa5" * (len(data) - 4096))


def rcpt_replies(inst, source, sender, rcpts):
    """[(code, text)] for each RCPT, from a client at source."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30,
                      source_address=(source, 0)) as client:
        code, text = client.ehlo("client.test")
        assert code == 250, text
        code, text = client.mail(sender)
        assert code == 250, text
        got = [(c, t.decode(errors="replace"))
               for c, t in (client.rcpt(r) for r in rcpts)]
        client.rset()
        return got


def one(inst, source, sender, rcpt):
    return rcpt_replies(inst, source, sender, [rcpt])[0]


def test_sender_access_reject_text_and_defer(inst):
    assert one(inst, "127.0.1.7", "spam@bad.test", "alice@localhost") == \
        (554, "5.7.1 <spam@bad.test>: Sender address rejected: No spam please")
    assert one(inst, "127.0.1.7", "x@sub.slow.test", "alice@localhost") == \
        (450, "4.7.1 <x@sub.slow.test>: Sender address rejected: come back"
              " later")
    assert one(inst, "127.0.1.7", "friend@good.test", "alice@localhost") == \
        (250, "2.1.5 Ok")
    inst_log = inst.log()
    assert ("NOQUEUE: reject: RCPT from unknown[127.0.1.7]: 554 5.7.1"
            " <spam@bad.test>: Sender address rejected: No spam please;"
            " from=<spam@bad.test> to=<alice@localhost> proto=ESMTP"
            " helo=<client.test>") in inst_log


def test_recipient_access_ok_relays_one_domain(inst):
    got = rcpt_replies(inst, "127.0.1.7", "friend@good.test",
                       ["bob@outside.test", "bob@sub.outside.test",
                        "bob@elsewhere.test"])
    assert got == [(250, "2.1.5 Ok"), (250, "2.1.5 Ok"),
                   (554, "5.7.1 <bob@elsewhere.test>: Relay access denied")]


def test_client_access_by_address_and_prefix(inst):
    assert one(inst, "127.0.0.1", "friend@good.test", "alice@localhost") == \
        (554, "5.7.1 <unknown[127.0.0.1]>: Client host rejected: go away")
    assert one(inst, "127.0.0.2", "friend@good.test", "alice@localhost") == \
        (450, "4.7.9 <unknown[127.0.0.2]>: Client host rejected: prefix"
              " deferred")


def test_local_recipient_maps(inst):
    got = rcpt_replies(inst, "127.0.1.7", "friend@good.test",
                       ["nobody@localhost", "alice@localhost",
                        "alice@mx.test", "nobody@hashrelay.test"])
    assert got == [
        (550, "5.1.1 <nobody@localhost>: Recipient address rejected: User"
              " unknown in local recipient table"),
        (250, "2.1.5 Ok"), (250, "2.1.5 Ok"), (250, "2.1.5 Ok")]


def test_relay_domains_and_mynetworks_from_tables(inst):
    # relay_domains = hash:relay (and its subdomains)
    got = rcpt_replies(inst, "127.0.1.4", "friend@good.test",
                       ["x@hashrelay.test", "x@sub.hashrelay.test",
                        "x@other.test"])
    assert got == [(250, "2.1.5 Ok"), (250, "2.1.5 Ok"),
                   (554, "5.7.1 <x@other.test>: Relay access denied")]
    # 127.0.1.3 is in mynetworks through texthash:nets: it may relay
    assert one(inst, "127.0.1.3", "friend@good.test", "x@other.test") == \
        (250, "2.1.5 Ok")


def test_lookup_failure_is_451(inst):
    # 127.0.3.x is not in the inline table: the broken hash: table answers
    assert one(inst, "127.0.3.9", "friend@good.test", "alice@localhost") == \
        (451, "4.3.0 <unknown[127.0.3.9]>: Temporary lookup failure")
    assert "lookup of \"127.0.3.9\" failed" in inst.log()
