"""tlsca - a test certificate authority made with the openssl command

make_ca(folder) makes a CA and returns a TestCA whose issue(name) signs a
certificate for a host name (with 127.0.0.1 and localhost as alternative
names), for servers (smtpd, a sink) and clients alike. Keys are EC P-256:
quick to make. Every file is readable by others (0644) and the folder
searchable (0755): the daemons of an instance that root starts run as
nobody and read their certificate after dropping privileges.

    ca = make_ca(tmp_path / "ca")
    cert = ca.issue("mx.test")
    cert.chain   # PEM: key, then certificate, then the CA (smtpd_tls_chain_files)
    cert.cert, cert.key, ca.cert   # separate PEM files (ca.cert: smtp_tls_CAfile)
"""

import os
import subprocess
from pathlib import Path


def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl"] + [str(a) for a in args], cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "openssl %s: %s" % (" ".join(map(str, args)),
                                                  r.stderr.strip())
    return r.stdout


class Issued:
    """One certificate made by a TestCA."""

    def __init__(self, name, key, cert, chain):
        self.name = name
        self.key = key          # PEM private key
        self.cert = cert        # PEM certificate followed by the CA's
        self.chain = chain      # PEM key + certificate + CA, one file


class TestCA:
    """A CA in folder: ca.key, ca.pem."""

    __test__ = False            # not a pytest test class

    def __init__(self, folder):
        self.dir = Path(folder)
        self.key = self.dir / "ca.key"
        self.cert = self.dir / "ca.pem"
        self._serial = 1

    def issue(self, name, days=30, alt_names=("localhost", "127.0.0.1")):
        """A certificate for name signed by this CA (Issued)."""
        key = self.dir / ("%s.key" % name)
        csr = self.dir / ("%s.csr" % name)
        crt = self.dir / ("%s.crt" % name)
        ext = self.dir / ("%s.ext" % name)
        sans = ["DNS:%s" % name] + [
            ("IP:%s" % a) if a.replace(".", "").isdigit() or ":" in a
            else ("DNS:%s" % a) for a in alt_names]
        ext.write_text("basicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n"
                       "subjectAltName=%s\n" % ",".join(sans))
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                 "-out", csr, "-subj", "/CN=%s" % name)
        self._serial += 1
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey",
                 self.key, "-set_serial", self._serial, "-days", days,
                 "-sha256", "-extfile", ext, "-out", crt)
        cert_pem = crt.read_text() + self.cert.read_text()
        full = self.dir / ("%s-cert.pem" % name)
        full.write_text(cert_pem)
        chain = self.dir / ("%s-chain.pem" % name)
        chain.write_text(key.read_text() + cert_pem)
        for p in (key, full, chain, crt):
            os.chmod(p, 0o644)
        return Issued(name, key, full, chain)


def make_ca(folder, name="Sluice Test CA"):
    """A new CA in folder (made if needed); returns its TestCA."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    ca = TestCA(folder)
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca.key,
             "-out", ca.cert, "-days", "30", "-subj", "/CN=%s" % name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(ca.cert, 0o644)
    return ca
