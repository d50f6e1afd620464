"""test_sender_relayhost - sender_dependent_relayhost_maps in qmgr's routing
(issue 24 item 6), over real SMTP

Two Sinks: relayhost is the first; the table sends mail from one sender,
and from every other sender of a domain ("@domain"), to the second. A
"DUNNO" entry keeps relayhost. The table is a hash: built by `sluice map`.
"""

import time

from conftest import LIBEXEC, require, smtp_submit, wait_until

DAEMONS = ("master", "smtpd", "cleanup", "qmgr", "smtp")


def test_sender_dependent_relayhost(make_instance, make_sink, tmp_path):
    require(*(LIBEXEC / d for d in DAEMONS))
    default_sink = make_sink()
    corp_sink = make_sink()
    table = tmp_path / "relayhost"
    table.write_text("a@corp.test      [127.0.0.1]:%d\n"
                     "@other.test      [127.0.0.1]:%d\n"
                     "keep@other.test  DUNNO\n"
                     % (corp_sink.port, corp_sink.port))
    inst = make_instance(relayhost="[127.0.0.1]:%d" % default_sink.port)
    inst.check("map", "hash:%s" % table)
    inst.conf_set(mynetworks="127.0.0.0/8",
                  sender_dependent_relayhost_maps="hash:%s" % table)
    inst.start()
    cases = [("a@corp.test", corp_sink), ("b@corp.test", default_sink),
             ("x@other.test", corp_sink), ("keep@other.test", default_sink)]
    for sender, _ in cases:
        body = (b"Subject: route\r\nMessage-ID: <%d@c.test>\r\n\r\nfrom %s\r\n"
                % (time.monotonic_ns(), sender.encode()))
        code, text = smtp_submit(inst, sender, ["u@remote.test"], body)
        assert code == 250, text

    def arrived():
        got = {}
        for name, s in (("corp", corp_sink), ("default", default_sink)):
            for m in s.received():
                got[m.mail_from] = name
        return got if len(got) == len(cases) else None
    got = wait_until(arrived, 30, what="all four messages")
    assert got == {s: ("corp" if sink is corp_sink else "default")
                   for s, sink in cases}, got
