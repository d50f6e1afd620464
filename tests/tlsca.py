"""tlsca - a throwaway certificate authority for TLS tests, made with openssl

make_ca(directory) -> CA: a self-signed root (CA.ca_cert, CA.ca_key) in
directory; CA.issue(name, *sans) -> (cert_path, key_path, chain_pem_path)
issues a server certificate for name (and every extra DNS name in sans,
"IP:..." for an address) signed by the root. chain_pem_path holds the key,
the certificate and the root, in that order (smtpd_tls_chain_files style).
Everything runs the openssl command line tool with fixed arguments; keys
are RSA 2048 (quick to make) and nothing outlives the test folder.
"""

import subprocess
from pathlib import Path


def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl"] + [str(a) for a in args], cwd=cwd,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("openssl %s: %s" % (" ".join(map(str, args)),
                                                 r.stderr.strip()))
    return r.stdout


class CA:
    """A root certificate and key; issue() signs server certificates."""

    def __init__(self, directory, name="Sluice Test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ca_key = self.dir / "ca.key"
        self.ca_cert = self.dir / "ca.pem"
        self._serial = 1
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes",
                 "-keyout", self.ca_key, "-out", self.ca_cert,
                 "-days", "2", "-subj", "/O=sluice tests/CN=%s" % name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name, *sans):
        """A certificate for name (+ sans) -> (cert, key, chain) paths."""
        self._serial += 1
        stem = self.dir / ("%s-%d" % (name.replace("*", "star"), self._serial))
        key = stem.with_suffix(".key")
        csr = stem.with_suffix(".csr")
        cert = stem.with_suffix(".pem")
        chain = Path(str(stem) + "-chain.pem")
        ext = Path(str(stem) + ".ext")
        alt = ["DNS:%s" % name] + [s if ":" in s else "DNS:%s" % s
                                   for s in sans]
        ext.write_text("basicConstraints=CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\n"
                       "subjectAltName=%s\n" % ",".join(alt))
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=%s" % name)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca_cert,
                 "-CAkey", self.ca_key, "-set_serial", str(self._serial),
                 "-days", "2", "-extfile", ext, "-out", cert)
        chain.write_text(key.read_text() + cert.read_text() +
                         self.ca_cert.read_text())
        return cert, key, chain


def make_ca(directory, name="Sluice Test CA"):
    """A new CA in directory (see CA)."""
    return CA(directory, name)
