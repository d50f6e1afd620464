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
