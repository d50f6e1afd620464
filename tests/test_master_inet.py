"""test_master_inet - inet_interfaces and inet_protocols (issue
"Hardening", item 13)

An inet service that master.cf names by a bare port (or a service name)
listens on the addresses of inet_interfaces (all, loopback-only, or a list
of numeric addresses) of the families inet_protocols allows (all, ipv4,
ipv6); one with an address in master.cf listens there alone. Bad values
stop `sluice start` with one clear line.

Only loopback is ever bound here: no test sets inet_interfaces = all. The
checks are a connect to each address (a refused connect to 127.0.0.2
proves the listener is not the wildcard) and the LISTEN rows of
/proc/net/tcp and /proc/net/tcp6.
"""

import errno
import ipaddress
import re
import socket

import pytest

from conftest import LIBEXEC, one_line, require, smtp_banner


def listeners(port):
    """The addresses with a TCP socket in LISTEN on port (IPv4 and IPv6
    as strings; "0.0.0.0" and "::" for wildcards)."""
    found = set()
    for name, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            rows = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state = fields[1], fields[3]
            host, hport = local.split(":")
            if state != "0A" or int(hport, 16) != port:
                continue
            raw = bytes.fromhex(host)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw[:width])))
    return found


def refused(host, port):
    """True when a TCP connect to host:port is refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        err = s.connect_ex((host, port))
    return err == errno.ECONNREFUSED


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def bare_port_instance(make_instance, **params):
    """An instance whose smtpd service is named by its bare port."""
    require(LIBEXEC / "smtpd")
    inst = make_instance(params=params)
    text = inst.master_cf.read_text()
    explicit = "127.0.0.1:%d " % inst.port
    assert explicit in text, text
    inst.master_cf.write_text(text.replace(explicit, "%d " % inst.port))
    return inst


def serves(host, port):
    code, text = smtp_banner(port, host=host)
    assert code == 220, text
    return True


def test_bare_port_listens_on_inet_interfaces_only(make_instance):
    """inet_interfaces = 127.0.0.1: the listener is 127.0.0.1 alone (before:
    the wildcard, so 127.0.0.2 answered too)."""
    inst = bare_port_instance(make_instance, inet_interfaces="127.0.0.1")
    inst.start()
    assert serves("127.0.0.1", inst.port)
    assert refused("127.0.0.2", inst.port)
    assert listeners(inst.port) == {"127.0.0.1"}


def test_loopback_only(make_instance):
    """loopback-only: 127.0.0.1, and ::1 when inet_protocols allows IPv6
    and the host has it; never a wildcard."""
    inst = bare_port_instance(make_instance, inet_interfaces="loopback-only")
    inst.start()
    assert serves("127.0.0.1", inst.port)
    assert refused("127.0.0.2", inst.port)
    want = {"127.0.0.1", "::1"} if have_ipv6_loopback() else {"127.0.0.1"}
    assert listeners(inst.port) == want
    if "::1" in want:
        assert serves("::1", inst.port)


def test_loopback_only_ipv4(make_instance):
    """inet_protocols = ipv4 leaves ::1 out."""
    inst = bare_port_instance(make_instance, inet_interfaces="loopback-only",
                              inet_protocols="ipv4")
    inst.start()
    assert serves("127.0.0.1", inst.port)
    assert listeners(inst.port) == {"127.0.0.1"}
    if have_ipv6_loopback():
        assert refused("::1", inst.port)


def test_ipv6_only(make_instance):
    """inet_protocols = ipv6 with loopback-only: ::1 alone."""
    if not have_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    inst = bare_port_instance(make_instance, inet_interfaces="loopback-only",
                              inet_protocols="ipv6")
    inst.start()
    assert serves("::1", inst.port)
    assert refused("127.0.0.1", inst.port)
    assert listeners(inst.port) == {"::1"}


def test_list_of_addresses(make_instance):
    """A list: one listener per address, all served by the same smtpd."""
    inst = bare_port_instance(make_instance,
                              inet_interfaces="127.0.0.1, 127.0.0.3")
    inst.start()
    assert serves("127.0.0.1", inst.port)
    assert serves("127.0.0.3", inst.port)
    assert refused("127.0.0.2", inst.port)
    assert listeners(inst.port) == {"127.0.0.1", "127.0.0.3"}


def test_explicit_address_wins(make_instance):
    """A master.cf service with its own address ignores inet_interfaces."""
    require(LIBEXEC / "smtpd")
    inst = make_instance(params={"inet_interfaces": "127.0.0.3"}, start=True)
    assert serves("127.0.0.1", inst.port)
    assert refused("127.0.0.3", inst.port)
    assert listeners(inst.port) == {"127.0.0.1"}


@pytest.mark.parametrize("params, says", [
    ({"inet_interfaces": "mail.example.test"},
     r'inet_interfaces: "mail.example.test" is not a numeric IP address'),
    ({"inet_interfaces": "all, 127.0.0.1"}, r'inet_interfaces: "all" stands alone'),
    ({"inet_protocols": "ipx"}, r'inet_protocols: unknown protocol "ipx"'),
    ({"inet_interfaces": "::1", "inet_protocols": "ipv4"},
     r"inet_interfaces \(::1\) and inet_protocols \(ipv4\) leave no "
     r"address to listen on"),
])
def test_bad_values_stop_start(make_instance, params, says):
    """A bad value: start fails with one line that names it, and nothing
    listens on the port."""
    inst = bare_port_instance(make_instance, **params)
    r = inst.command("start")
    assert r.returncode != 0
    lines = one_line(r.stderr)
    assert len(lines) == 1, r.stderr
    assert re.search(says, lines[0]), lines
    assert listeners(inst.port) == set()
    assert inst.master_pid() is None
