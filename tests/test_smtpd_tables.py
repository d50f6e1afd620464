"""test_smtpd_tables - smtpd stays up when its configuration is broken

A table that is missing (a .db removed, or never built) or an unknown word
in a restriction list used to make smtpd exit at start, so master restarted
it in a loop and no client got a greeting. Now smtpd greets, answers 451
4.3.0 for the recipients whose decision needs the missing table (others
pass), 451 4.3.5 where evaluation reaches an unknown restriction, and logs
a warning naming the table or the word.
"""

import smtplib

from conftest import require_daemon, wait_until


def rcpts(inst, rcpt_list, source="127.0.0.1"):
    """The greeting code and [(code, text)] of each RCPT, in one session."""
    with smtplib.SMTP(timeout=15, source_address=(source, 0)) as client:
        code, _ = client.connect("127.0.0.1", inst.port)
        assert code == 220
        client.ehlo("client.test")
        code, text = client.mail("sender@example.test")
        assert code == 250, text
        got = [(c, t.decode(errors="replace"))
               for c, t in (client.rcpt(r) for r in rcpt_list)]
        client.rset()
        return got


def test_missing_tables_answer_451_and_smtpd_stays_up(make_instance):
    require_daemon("smtpd")
    inst = make_instance(params={"myhostname": "mx.test",
                                 "mydestination": "localhost"})
    tables = inst.dir / "tables"
    tables.mkdir()
    (tables / "aliases").write_text("bob x\n")
    (tables / "access").write_text("carol@localhost REJECT nope\n")
    inst.check("map", "hash:%s" % (tables / "aliases"))
    inst.check("map", "hash:%s" % (tables / "access"))
    inst.conf_set(
        local_recipient_maps="inline:{ alice=yes } hash:%s" % (tables / "aliases"),
        smtpd_recipient_restrictions=(
            "check_recipient_access inline:{ alice@localhost=OK,"
            " bob@localhost=OK }, check_recipient_access hash:%s"
            % (tables / "access")))
    inst.start()
    want_ok = [(250, "2.1.5 Ok"), (250, "2.1.5 Ok"),
               (554, "5.7.1 <carol@localhost>: Recipient address rejected:"
                     " nope")]
    who = ["alice@localhost", "bob@localhost", "carol@localhost"]
    assert rcpts(inst, who) == want_ok

    # Removed while running: the open tables keep answering.
    (tables / "aliases.db").unlink()
    (tables / "access.db").unlink()
    assert rcpts(inst, who) == want_ok

    # At start (a new smtpd, then a whole new start): greet, and 451 only
    # for what needs a missing table.
    want_fail = [(250, "2.1.5 Ok"),
                 (451, "4.3.0 <bob@localhost>: Temporary lookup failure"),
                 (451, "4.3.0 <carol@localhost>: Temporary lookup failure")]
    inst.stop()
    inst.start()
    assert rcpts(inst, who) == want_fail
    assert rcpts(inst, who) == want_fail   # and again: no crash, no loop
    log = inst.log()
    assert "aliases.db" in log and "access.db" in log
    assert "warning: local_recipient_maps: hash:%s" % (tables / "aliases") in log
    assert "fatal" not in log

    # The tables come back: smtpd opens them again by itself.
    inst.check("map", "hash:%s" % (tables / "aliases"))
    inst.check("map", "hash:%s" % (tables / "access"))
    wait_until(lambda: rcpts(inst, who) == want_ok, timeout=10,
               what="the rebuilt tables to be used")


def test_unknown_restriction_answers_451_4_3_5(make_instance):
    require_daemon("smtpd")
    inst = make_instance(params={
        "myhostname": "mx.test", "mydestination": "localhost",
        "mynetworks": "127.0.0.1/32",
        # a Postfix word smtpd does not implement
        "smtpd_relay_restrictions": "permit_mynetworks"
        " reject_non_fqdn_recipient reject_unauth_destination"}, start=True)
    # A client in mynetworks is decided before the bad word is reached.
    assert rcpts(inst, ["x@remote.test"], source="127.0.0.1") == \
        [(250, "2.1.5 Ok")]
    # Any other client reaches it: 451 4.3.5, never a relay, never a loop.
    for _ in range(2):
        assert rcpts(inst, ["x@remote.test", "alice@localhost"],
                     source="127.0.0.2") == \
            [(451, "4.3.5 Server configuration error")] * 2
    log = inst.log()
    assert 'unknown restriction "reject_non_fqdn_recipient"' in log
    assert "fatal" not in log


def test_defer_unauth_destination_answers_450(make_instance):
    """Debian's stock smtpd_relay_restrictions: mynetworks relays, anyone
    else gets 450 4.7.1 (Postfix's defer_code) for a foreign domain and is
    accepted for ours."""
    require_daemon("smtpd")
    inst = make_instance(params={
        "myhostname": "mx.test", "mydestination": "localhost",
        "mynetworks": "127.0.0.1/32",
        "smtpd_relay_restrictions": "permit_mynetworks"
        " permit_sasl_authenticated defer_unauth_destination"}, start=True)
    assert rcpts(inst, ["x@remote.test"], source="127.0.0.1") == \
        [(250, "2.1.5 Ok")]
    assert rcpts(inst, ["x@remote.test", "alice@localhost"],
                 source="127.0.0.2") == \
        [(450, "4.7.1 <x@remote.test>: Relay access denied"),
         (250, "2.1.5 Ok")]
