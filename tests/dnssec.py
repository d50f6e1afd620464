"""dnssec - a DNSSEC-signed zone served on loopback, for tests

SignedDns starts tests/dnssec_server.py (dnspython signs the zone; see
there) as a process of its own and stops it by its PID:

    dns = SignedDns(tmp_path, "dane.test",
                    [("dane.test", "MX", "10 mx.dane.test"),
                     ("mx.dane.test", "A", "127.0.0.1"),
                     ("_25._tcp.mx.dane.test", "TLSA", "3 1 1 <hex>")],
                    unsigned_zone="plain.test", unsigned=[...],
                    bogus=["_25._tcp.bad.dane.test"])
    params = {"disable_dns_lookups": "no", "dns_servers": dns.server,
              "dns_trust_anchor_file": dns.anchor}
    dns.stop()

dns.queries() lists what was asked, ("name", "TYPE") pairs.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).with_name("dnssec_server.py")


def require_dnspython():
    """Skip when dnspython or python3-cryptography is missing."""
    import pytest
    r = subprocess.run([sys.executable, "-P", "-c",
                        "import dns.dnssec, cryptography"],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip("python3-dnspython and python3-cryptography are needed "
                    "(./install-deps.sh)")


class SignedDns:
    def __init__(self, folder, zone, records, unsigned_zone=None,
                 unsigned=(), bogus=()):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.anchor = str(folder / "trust-anchor")
        self._log = folder / "dnssec-server.log"
        conf = folder / "dnssec-server.json"
        conf.write_text(json.dumps({
            "zone": zone, "records": [list(r) for r in records],
            "unsigned_zone": unsigned_zone,
            "unsigned": [list(r) for r in unsigned],
            "bogus": list(bogus), "anchor": self.anchor}))
        with open(self._log, "w") as err:
            self.proc = subprocess.Popen(
                ["/usr/bin/python3", "-P", str(SERVER), str(conf)],
                stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("dnssec_server did not start: %s"
                               % self._log.read_text())
        self.port = int(line)
        self.server = "127.0.0.1:%d" % self.port
        # The daemons run as nobody and read the anchor.
        os.chmod(folder, 0o755)
        os.chmod(self.anchor, 0o644)

    def queries(self):
        out = []
        for line in self._log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "query":
                out.append((parts[1], parts[2]))
        return out

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


# --- the same zones from a real authoritative server --------------------

NSD = "/usr/sbin/nsd"
LDNS_KEYGEN = "/usr/bin/ldns-keygen"
LDNS_SIGNZONE = "/usr/bin/ldns-signzone"


def require_nsd():
    """Skip when nsd or ldnsutils is missing."""
    import pytest
    for prog in (NSD, LDNS_KEYGEN, LDNS_SIGNZONE):
        if not os.access(prog, os.X_OK):
            pytest.skip("%s is needed: nsd and ldnsutils (./install-deps.sh)"
                        % prog)


def _zone_text(origin, records):
    """A zone file: SOA, NS (ns.<origin>, 127.0.0.1) and records."""
    lines = ["$TTL 300",
             "%s. IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300"
             % (origin, origin, origin),
             "%s. IN NS ns.%s." % (origin, origin),
             "ns.%s. IN A 127.0.0.1" % origin]
    for name, rtype, rdata in records:
        if rtype.upper() in ("MX", "CNAME", "NS"):
            # host names in rdata are absolute
            parts = rdata.split()
            if not parts[-1].endswith("."):
                parts[-1] += "."
            rdata = " ".join(parts)
        lines.append("%s. IN %s %s" % (name.rstrip("."), rtype, rdata))
    return "\n".join(lines) + "\n"


def _dns_probe(port, name, timeout=0.5):
    """True when something on 127.0.0.1:port answers a SOA query for name
    (a hand-made query: tests/dns.py hides dnspython here)."""
    import socket
    import struct
    qname = b"".join(bytes([len(label)]) + label.encode()
                     for label in name.strip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", 0x5151, 0, 1, 0, 0, 0) + qname + \
        struct.pack(">HH", 6, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(packet, ("127.0.0.1", port))
        data = s.recv(4096)
        return len(data) >= 12 and data[:2] == b"\x51\x51"
    except OSError:
        return False
    finally:
        s.close()


class NsdDns:
    """SignedDns's zones served by NSD, signed by ldns-signzone.

    The signed zone gets a fresh ECDSA P-256 key (ldns-keygen, KSK flag)
    and NSEC records (ldns-signzone); its DNSKEY is the trust anchor. For
    each name in bogus, the RRSIG of its records (but DNSKEY, SOA, NS and
    NSEC) has its signature changed after signing: a validator finds
    those answers bogus. The unsigned zone is served as it is. NSD runs in
    the foreground on 127.0.0.1:port (UDP and TCP) until stop(). It logs
    no queries: queries() is not offered."""

    def __init__(self, folder, zone, records, unsigned_zone=None,
                 unsigned=(), bogus=()):
        from conftest import free_port, wait_until
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.anchor = str(folder / "trust-anchor")
        self._log = folder / "nsd.log"
        zfile = folder / ("%s.zone" % zone)
        zfile.write_text(_zone_text(zone, records))
        run = dict(cwd=folder, capture_output=True, text=True, timeout=60)
        r = subprocess.run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", "-k",
                            zone], **run)
        if r.returncode != 0:
            raise RuntimeError("ldns-keygen: %s" % r.stderr)
        keybase = r.stdout.strip()
        r = subprocess.run([LDNS_SIGNZONE, "-f", str(zfile) + ".signed",
                            str(zfile), keybase], **run)
        if r.returncode != 0:
            raise RuntimeError("ldns-signzone: %s" % r.stderr)
        signed = Path(str(zfile) + ".signed")
        if bogus:
            signed.write_text(self._spoil(signed.read_text(), bogus))
        Path(self.anchor).write_text(
            (folder / (keybase + ".key")).read_text())
        zones = [(zone, signed)]
        if unsigned_zone:
            ufile = folder / ("%s.zone" % unsigned_zone)
            ufile.write_text(_zone_text(unsigned_zone, unsigned))
            zones.append((unsigned_zone, ufile))
        self.port = free_port(udp=True)
        self.server = "127.0.0.1:%d" % self.port
        conf = folder / "nsd.conf"
        text = ["server:",
                "  ip-address: 127.0.0.1@%d" % self.port,
                "  do-ip6: no", "  server-count: 1", "  username: \"\"",
                "  chroot: \"\"", "  database: \"\"",
                "  zonesdir: \"%s\"" % folder,
                "  zonelistfile: \"%s\"" % (folder / "zone.list"),
                "  xfrdfile: \"%s\"" % (folder / "xfrd.state"),
                "  xfrdir: \"%s\"" % folder,
                "  pidfile: \"%s\"" % (folder / "nsd.pid"),
                "  logfile: \"%s\"" % self._log,
                "  verbosity: 1", "  hide-version: yes",
                "remote-control:", "  control-enable: no"]
        for name, path in zones:
            text += ["zone:", "  name: \"%s\"" % name,
                     "  zonefile: \"%s\"" % path]
        conf.write_text("\n".join(text) + "\n")
        self.proc = subprocess.Popen([NSD, "-d", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.proc.poll() is not None or
                       _dns_probe(self.port, zone), timeout=20,
                       what="nsd answers on port %d" % self.port)
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError("nsd did not start: %s" % self.log())
        # The daemons run as nobody and read the anchor.
        os.chmod(folder, 0o755)
        os.chmod(self.anchor, 0o644)

    @staticmethod
    def _spoil(text, bogus):
        """Change one base64 digit in the signature of each RRSIG owned by
        a name in bogus (but those over DNSKEY, SOA, NS and NSEC)."""
        names = {n.rstrip(".").lower() + "." for n in bogus}
        out = []
        for line in text.splitlines():
            f = line.split()
            if (len(f) >= 13 and f[3] == "RRSIG" and f[0].lower() in names
                    and f[4] not in ("DNSKEY", "SOA", "NS", "NSEC")):
                sig = f[-1]
                mid = len(sig) // 2
                c = "B" if sig[mid] != "B" else "C"
                f[-1] = sig[:mid] + c + sig[mid + 1:]
                line = "\t".join(f)
            out.append(line)
        return "\n".join(out) + "\n"

    def log(self):
        try:
            return self._log.read_text()
        except OSError:
            return ""

    def queries(self):
        raise NotImplementedError("NSD logs no queries")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
