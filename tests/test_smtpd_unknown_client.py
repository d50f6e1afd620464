"""test_smtpd_unknown_client - reject_unknown_client_hostname and
reject_unknown_reverse_client_hostname, as Postfix has them

smtpd looks the client up before the greeting (PTR, then the name's A
record, which must lead back: forward-confirmed). With
reject_unknown_client_hostname a client without a forward-confirmed name
is refused; with reject_unknown_reverse_client_hostname only one whose
address has no PTR at all. The code is unknown_client_reject_code (450 by
default, as Postfix's) when DNS said no, and always 450 when DNS failed
(a temporary problem); the status is RFC 7372's X.7.25:

    450 4.7.25 Client host rejected: cannot find your hostname, [addr]

Every query goes to a dnsmasq on loopback (make_dns) or to a silent
socket; clients connect from 127.0.0.x addresses, none in mynetworks.
"""

import smtplib

import pytest

from conftest import LIBEXEC, require
from test_smtpd import mta  # noqa: F401 (fixture)

HELO = "client.test"


@pytest.fixture(autouse=True)
def _built():
    require(LIBEXEC / "smtpd", LIBEXEC / "cleanup")


def server_with(mta, dns_server, restrictions, **params):
    return mta(disable_dns_lookups="no", dns_servers=dns_server,
               mynetworks="192.0.2.0/24",
               smtpd_client_restrictions=restrictions, **params)


def rcpt_reply(server, source):
    """(code, text) of RCPT TO from source (a 127.0.0.x address)."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30,
                      source_address=(source, 0)) as smtp:
        assert smtp.ehlo(HELO)[0] == 250
        assert smtp.mail("alice@example.test")[0] == 250
        code, text = smtp.rcpt("bob@localhost")
        return code, text.decode()


@pytest.fixture
def records(make_dns):
    """127.0.0.5 <-> host.test (confirmed); 127.0.0.6 has PTR liar.test,
    which is 127.0.0.99 (not confirmed); 127.0.0.7 has no PTR."""
    return make_dns(a=[("host.test", "127.0.0.5"),
                       ("liar.test", "127.0.0.99")],
                    ptr=[("127.0.0.6", "liar.test")])


def test_unknown_client_hostname(mta, records):
    server = server_with(mta, records.server,
                         "reject_unknown_client_hostname")
    assert rcpt_reply(server, "127.0.0.5")[0] == 250
    for addr in ("127.0.0.6", "127.0.0.7"):
        code, text = rcpt_reply(server, addr)
        assert (code, text) == (
            450, "4.7.25 Client host rejected: cannot find your hostname,"
                 " [%s]" % addr)


def test_unknown_reverse_client_hostname(mta, records):
    """A PTR is enough, confirmed or not; no PTR is refused, with
    unknown_client_reject_code."""
    server = server_with(mta, records.server,
                         "reject_unknown_reverse_client_hostname",
                         unknown_client_reject_code="550")
    assert rcpt_reply(server, "127.0.0.5")[0] == 250
    assert rcpt_reply(server, "127.0.0.6")[0] == 250
    code, text = rcpt_reply(server, "127.0.0.7")
    assert (code, text) == (
        550, "5.7.25 Client host rejected: cannot find your reverse"
             " hostname, [127.0.0.7]")


def test_code_applies_to_hostname_too(mta, records):
    server = server_with(mta, records.server,
                         "reject_unknown_client_hostname",
                         unknown_client_reject_code="550")
    code, text = rcpt_reply(server, "127.0.0.6")
    assert code == 550 and text.startswith("5.7.25 "), text


def test_dns_failure_is_always_450(mta):
    """A resolver that never answers: temporary, 450 whatever
    unknown_client_reject_code says, for both restrictions."""
    import dns as dnsmod
    silent = dnsmod.Silent()
    try:
        server = server_with(mta, silent.server,
                             "reject_unknown_reverse_client_hostname,"
                             " reject_unknown_client_hostname",
                             unknown_client_reject_code="550",
                             smtpd_peername_lookup_timeout="1s")
        code, text = rcpt_reply(server, "127.0.0.8")
        assert (code, text) == (
            450, "4.7.25 Client host rejected: cannot find your reverse"
                 " hostname, [127.0.0.8]")
    finally:
        silent.stop()


def test_permit_mynetworks_first(mta, records):
    """Restrictions apply in order: a client in mynetworks passes before
    the name is judged."""
    server = mta(disable_dns_lookups="no", dns_servers=records.server,
                 mynetworks="127.0.0.7/32",
                 smtpd_client_restrictions="permit_mynetworks,"
                                           " reject_unknown_client_hostname")
    assert rcpt_reply(server, "127.0.0.7")[0] == 250
    assert rcpt_reply(server, "127.0.0.6")[0] == 450
