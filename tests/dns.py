"""dns - a real DNS server on loopback for tests (Debian's dnsmasq)

DnsServer serves only what a test gives it, for .test names and reverse
(in-addr.arpa, ip6.arpa) names, and asks nobody else (--no-resolv
--no-hosts --local=...): MX records, A/AAAA records (each also gives the
address a PTR back to its name), PTR records alone (ptr=[("127.0.0.6",
"liar.test")]), TXT records (txt=[("a.test", "v=spf1 -all")]: a text
longer than 255 bytes becomes several character-strings, which SPF joins;
a list of texts gives several records), and raw records in hex (a null MX
is "nullmx.test", 15, "000000": preference 0, the root name). A name it
does not know gets NXDOMAIN. forward=[("slow.test", silent.server)] hands
every query for a domain and its subdomains to another server (a Silent
one: that domain alone times out, the others are answered).
Point an instance at it with
    params={"disable_dns_lookups": "no", "dns_servers": dns.server}

Silent is a UDP socket that never answers: a resolver that times out.
"""

import os
import random
import shutil
import socket
import struct
import subprocess
import time

import ports

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def _free_udp_tcp_port():
    """A port free for both UDP and TCP on 127.0.0.1, reserved against
    other test processes (tests/ports.py)."""
    return ports.free_port(udp=True)


def query(port, name, qtype=1, timeout=1.0):
    """Ask 127.0.0.1:port for name; return the rcode, or None on timeout."""
    qid = random.randrange(65536)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        packet += bytes([len(label)]) + label.encode()
    packet += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            return None
    return struct.unpack(">H", data[2:4])[0] & 0xF


class DnsServer:
    """dnsmasq on 127.0.0.1:port serving mx, a and raw records."""

    def __init__(self, mx=(), a=(), rr=(), ptr=(), txt=(), forward=(),
                 logfile=None):
        require_dnsmasq()
        self.port = _free_udp_tcp_port()
        self.server = "127.0.0.1:%d" % self.port
        user = _user_name()
        # --keep-in-foreground, not --no-daemon: with --no-daemon dnsmasq
        # serves a TCP connection in its one process, and a resolver that
        # keeps its TCP stream open for reuse (libunbound, after a truncated
        # answer) would stop every other query until it closes.
        argv = [DNSMASQ, "--keep-in-foreground", "--log-facility=-",
                "--conf-file=/dev/null",
                "--port=%d" % self.port, "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--pid-file=", "--local=/test/", "--local=/in-addr.arpa/",
                "--local=/ip6.arpa/", "--user=" + user,
                "--log-queries" if logfile else "--quiet-dhcp"]
        for domain, host, pref in mx:
            argv.append("--mx-host=%s,%s,%d" % (domain, host, pref))
        for host, ip in a:
            argv.append("--host-record=%s,%s" % (host, ip))
        for ip, name in ptr:
            argv.append("--ptr-record=%s,%s" % (_reverse_name(ip), name))
        for name, rtype, hexdata in rr:
            argv.append("--dns-rr=%s,%d,%s" % (name, rtype, hexdata))
        for domain, server in forward:
            host, port = server.rsplit(":", 1)
            argv.append("--server=/%s/%s#%s" % (domain, host, port))
        for name, texts in txt:
            for text in [texts] if isinstance(texts, str) else texts:
                argv.append(_txt_option(name, text))
        self.log = open(logfile, "wb") if logfile else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while query(self.port, "ready.test", timeout=0.2) is None:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited with %d" % self.proc.returncode)
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dnsmasq did not answer within 10s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


class Silent:
    """A UDP (and TCP) port on loopback that takes DNS queries and never
    answers them."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.server = "127.0.0.1:%d" % self.port

    def stop(self):
        self.udp.close()


def _txt_option(name, text):
    """--txt-record for one record: text in pieces of 255 bytes (the
    limit of a character-string), which dnsmasq separates by commas (so
    text holds none; on its command line quotes would be kept as text)."""
    if "," in text or '"' in text or "\\" in text:
        raise ValueError("no comma, quote or backslash in TXT text: %r" % text)
    pieces = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return "--txt-record=%s,%s" % (name, ",".join(pieces))


def _reverse_name(ip):
    import ipaddress
    return ipaddress.ip_address(ip).reverse_pointer


def require_dnsmasq():
    if not os.access(DNSMASQ, os.X_OK):
        import pytest
        why = "dnsmasq is not installed (Debian package dnsmasq-base)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def _user_name():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name
