"""test_smtpd_peername - smtpd names its clients as Postfix does

With smtpd_peername_lookup = yes and DNS on, smtpd asks for the client
address's PTR, then for the A record of the name it got, and uses the name
only when that leads back to the client's address (forward-confirmed);
otherwise the client is "unknown". The greeting waits for the lookup, which
is bounded by smtpd_peername_lookup_timeout. The name shows in the connect
and disconnect lines, in the Received: header and in the queue file's
client_name.

Every query goes to a dnsmasq on loopback (the make_dns fixture) whose query
log shows what was asked; the client connects from 127.0.0.x addresses.
"""

import smtplib

import pytest

from conftest import LIBEXEC, require
from test_smtpd import mta, qid_of, queued, wait_log  # noqa: F401 (fixture)

HELO = "client.test"


@pytest.fixture(autouse=True)
def _built():
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")


def server_with(mta, dns_server, **params):
    params.setdefault("mynetworks", "127.0.0.0/8")
    return mta(disable_dns_lookups="no", dns_servers=dns_server, **params)


def send_from(server, source):
    """One message from source (a 127.0.0.x address); its queue ID."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30,
                      source_address=(source, 0)) as smtp:
        assert smtp.ehlo(HELO)[0] == 250
        assert smtp.mail("alice@example.test")[0] == 250
        assert smtp.rcpt("bob@localhost")[0] == 250
        code, text = smtp.data(b"Subject: hi\r\n\r\nbody\r\n")
        assert code == 250, text
        return qid_of(text.decode())


def received_of(server, qid):
    sender, rcpts, attrs, content = queued(server, qid)
    return content.split(b"\n")[0].decode(), attrs


def dns_log(path):
    return path.read_text(errors="replace")


def test_forward_confirmed_name_is_used(mta, make_dns, tmp_path):
    """host.test has A 127.0.0.5, and so 127.0.0.5 has PTR host.test."""
    log = tmp_path / "dns.log"
    dns = make_dns(a=[("host.test", "127.0.0.5")], logfile=str(log))
    server = server_with(mta, dns.server)
    qid = send_from(server, "127.0.0.5")
    wait_log(server, r"connect from host\.test\[127\.0\.0\.5\]")
    received, attrs = received_of(server, qid)
    assert received == "Received: from %s (host.test [127.0.0.5])" % HELO
    assert attrs.get("client_name") == "host.test"
    assert attrs.get("client_addr") == "127.0.0.5"
    wait_log(server, r"%s: client=host\.test\[127\.0\.0\.5\]" % qid)
    wait_log(server, r"disconnect from host\.test\[127\.0\.0\.5\] ehlo=1")
    queries = dns_log(log)
    assert "query[PTR] 5.0.0.127.in-addr.arpa" in queries, queries
    assert "query[A] host.test" in queries, queries


def test_name_that_does_not_lead_back_is_unknown(mta, make_dns, tmp_path):
    """127.0.0.6 has PTR liar.test, but liar.test is 127.0.0.99."""
    log = tmp_path / "dns.log"
    dns = make_dns(ptr=[("127.0.0.6", "liar.test")],
                   a=[("liar.test", "127.0.0.99")], logfile=str(log))
    server = server_with(mta, dns.server)
    qid = send_from(server, "127.0.0.6")
    wait_log(server, r"warning: hostname liar\.test does not resolve to"
                     r" address 127\.0\.0\.6")
    wait_log(server, r"connect from unknown\[127\.0\.0\.6\]")
    received, attrs = received_of(server, qid)
    assert received == "Received: from %s (unknown [127.0.0.6])" % HELO
    assert attrs.get("client_name") == "unknown"
    assert "query[A] liar.test" in dns_log(log)


def test_no_ptr_is_unknown(mta, make_dns, tmp_path):
    log = tmp_path / "dns.log"
    dns = make_dns(a=[("host.test", "127.0.0.5")], logfile=str(log))
    server = server_with(mta, dns.server)
    qid = send_from(server, "127.0.0.7")
    wait_log(server, r"connect from unknown\[127\.0\.0\.7\]")
    received, attrs = received_of(server, qid)
    assert received == "Received: from %s (unknown [127.0.0.7])" % HELO
    queries = dns_log(log)
    # asked, answered "no such name", and nothing more
    assert "query[PTR] 7.0.0.127.in-addr.arpa" in queries, queries
    assert "query[A] ready.test" in queries     # the fixture's own probe
    assert queries.count("query[A]") == 1, queries
    assert "does not resolve" not in server.log()


def test_peername_lookup_off_asks_nothing(mta, make_dns, tmp_path):
    """smtpd_peername_lookup = no: unknown, and not one query; the same
    server with the lookup on names the client (the log can show it)."""
    log = tmp_path / "dns.log"
    dns = make_dns(a=[("host.test", "127.0.0.5")], logfile=str(log))
    off = server_with(mta, dns.server, smtpd_peername_lookup="no")
    qid = send_from(off, "127.0.0.5")
    wait_log(off, r"disconnect from unknown\[127\.0\.0\.5\]")
    received, attrs = received_of(off, qid)
    assert received == "Received: from %s (unknown [127.0.0.5])" % HELO
    assert "query[PTR]" not in dns_log(log)

    on = server_with(mta, dns.server)
    send_from(on, "127.0.0.5")
    wait_log(on, r"connect from host\.test\[127\.0\.0\.5\]")
    assert "query[PTR] 5.0.0.127.in-addr.arpa" in dns_log(log)


def test_silent_dns_server_still_gets_a_greeting(mta):
    """A resolver that never answers: the greeting comes once the lookup's
    bound has passed, and the client is unknown."""
    import dns as dnsmod
    silent = dnsmod.Silent()
    try:
        server = server_with(mta, silent.server,
                             smtpd_peername_lookup_timeout="2s")
        qid = send_from(server, "127.0.0.8")
        wait_log(server, r"warning: 127\.0\.0\.8: host name lookup timed out"
                         r" after 2s")
        wait_log(server, r"connect from unknown\[127\.0\.0\.8\]")
        received, attrs = received_of(server, qid)
        assert received == "Received: from %s (unknown [127.0.0.8])" % HELO
    finally:
        silent.stop()


def hosts_name(addr):
    """The first name /etc/hosts gives addr, or None."""
    try:
        lines = open("/etc/hosts").read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#")[0].split()
        if len(fields) >= 2 and fields[0] == addr:
            return fields[1]
    return None


def test_hosts_file_answers_before_dns(mta, make_dns, tmp_path):
    """127.0.0.1 is named from /etc/hosts; the DNS server is not asked."""
    name = hosts_name("127.0.0.1")
    if name is None:
        pytest.skip("/etc/hosts does not name 127.0.0.1")
    log = tmp_path / "dns.log"
    dns = make_dns(logfile=str(log))
    server = server_with(mta, dns.server)
    send_from(server, "127.0.0.1")
    wait_log(server, r"connect from %s\[127\.0\.0\.1\]" % name.replace(".", r"\."))
    assert "1.0.0.127.in-addr.arpa" not in dns_log(log)
