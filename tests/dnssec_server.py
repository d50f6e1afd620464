"""dnssec_server - a DNSSEC-signed authoritative DNS server on loopback

Run by tests/dnssec.py (SignedDns) as its own process, with python3 -P so
that dnspython's "dns" package is found and not tests/dns.py:

    python3 -P dnssec_server.py CONFIG.json

CONFIG: {"zone": "dane.test", "records": [[name, type, rdata], ...],
"unsigned_zone": "plain.test", "unsigned": [...], "bogus": [name, ...],
"anchor": path}. It signs the zone at start with a fresh ECDSA P-256 key
(algorithm 13) through dnspython and python3-cryptography, writes the
trust anchor (the DNSKEY in zone-file form, what libunbound's
ub_ctx_add_ta_file reads) to the anchor path, binds a UDP socket on
127.0.0.1 and prints its port on one line, then answers until killed.
A validating resolver given the anchor finds the zone's answers secure,
the unsigned zone's insecure (no trust anchor covers it), and the names
in bogus bogus (the signatures of their records are corrupted, but for
the zone's own DNSKEY, SOA, NS and the NSEC chain: the rest of the zone
stays secure).

A name with a CNAME record is answered with that record alone (for
any other type): the resolver follows it.
Every answer of the signed zone carries its RRSIG when the query has the
DO bit; a name without the asked type gets NODATA with the name's NSEC,
a name that does not exist NXDOMAIN with the NSEC that covers it (the
apex's NSEC also covers the wildcard: no record is named "*"). A query
outside both zones gets REFUSED.
"""

import json
import sys
import socket
import time

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec

TTL = 300


def _rrset(name, rtype, texts):
    rs = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
    for text in texts:
        rs.add(dns.rdata.from_text(dns.rdataclass.IN, rs.rdtype, text,
                                   origin=dns.name.root, relativize=False), TTL)
    return rs


def _build(origin, records):
    """{name: {rdtype: RRset}} from (name, type, rdata) tuples plus an SOA
    and NS at the apex."""
    data = {}
    texts = {}
    records = list(records) + [
        (origin, "SOA", "ns.%s hostmaster.%s 1 3600 600 86400 300"
         % (origin, origin)),
        (origin, "NS", "ns.%s" % origin)]
    for name, rtype, text in records:
        key = (dns.name.from_text(name), rtype.upper())
        texts.setdefault(key, []).append(text)
    for (name, rtype), t in texts.items():
        data.setdefault(name, {})[dns.rdatatype.from_text(rtype)] = \
            _rrset(name, rtype, t)
    return data


class SignedDns:
    """A signed zone and an unsigned one, served on 127.0.0.1:port."""

    def __init__(self, zone, records, unsigned_zone=None, unsigned=(),
                 bogus=(), anchor_path=None):
        self.origin = dns.name.from_text(zone)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.dnskey = dns.dnssec.make_dnskey(self.key.public_key(),
                                             dns.dnssec.Algorithm.ECDSAP256SHA256,
                                             flags=257)
        self.data = _build(zone, records)
        apex = self.data[self.origin]
        keyset = dns.rrset.RRset(self.origin, dns.rdataclass.IN,
                                 dns.rdatatype.DNSKEY)
        keyset.add(self.dnskey, TTL)
        apex[dns.rdatatype.DNSKEY] = keyset
        self._add_nsec()
        bogus = {dns.name.from_text(n) for n in bogus}
        self.sigs = {}
        now = int(time.time())
        for name, sets in self.data.items():
            for rdtype, rs in sets.items():
                sig = dns.dnssec.sign(rs, self.key, self.origin, self.dnskey,
                                      inception=now - 3600,
                                      expiration=now + 86400)
                if name in bogus and rdtype not in (
                        dns.rdatatype.NSEC, dns.rdatatype.DNSKEY,
                        dns.rdatatype.SOA, dns.rdatatype.NS):
                    raw = bytearray(sig.signature)
                    raw[10] ^= 0xFF
                    sig = sig.replace(signature=bytes(raw))
                sigset = dns.rrset.RRset(name, dns.rdataclass.IN,
                                         dns.rdatatype.RRSIG, rdtype)
                sigset.add(sig, TTL)
                self.sigs[(name, rdtype)] = sigset
        self.unsigned_origin = (dns.name.from_text(unsigned_zone)
                                if unsigned_zone else None)
        self.unsigned = (_build(unsigned_zone, unsigned)
                         if unsigned_zone else {})
        self.anchor_text = "%s IN DNSKEY %s\n" % (self.origin.to_text(),
                                                 self.dnskey.to_text())
        self.anchor = None
        if anchor_path is not None:
            with open(anchor_path, "w") as f:
                f.write(self.anchor_text)
            self.anchor = str(anchor_path)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def _add_nsec(self):
        names = sorted(self.data)
        for i, name in enumerate(names):
            nxt = names[(i + 1) % len(names)]
            types = sorted(set(self.data[name]) |
                           {dns.rdatatype.RRSIG, dns.rdatatype.NSEC})
            nsec = dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.NSEC,
                "%s %s" % (nxt.to_text(), " ".join(
                    dns.rdatatype.to_text(t) for t in types)),
                origin=dns.name.root, relativize=False)
            rs = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.NSEC)
            rs.add(nsec, TTL)
            self.data[name][dns.rdatatype.NSEC] = rs
        self.sorted_names = names

    def _covering(self, qname):
        """The owner name whose NSEC covers qname (it does not exist)."""
        best = self.sorted_names[-1]
        for name in self.sorted_names:
            if name < qname:
                best = name
        return best

    def _signed(self, section, rs, want_sig):
        section.append(rs)
        if want_sig:
            section.append(self.sigs[(rs.name, rs.rdtype)])

    def answer(self, query):
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA | dns.flags.RA
        q = query.question[0]
        qname, qtype = q.name, q.rdtype
        do = bool(query.ednsflags & dns.flags.DO)
        if qname.is_subdomain(self.origin):
            data, signed, origin = self.data, True, self.origin
        elif self.unsigned_origin and qname.is_subdomain(self.unsigned_origin):
            data, signed, origin = self.unsigned, False, self.unsigned_origin
        else:
            resp.set_rcode(dns.rcode.REFUSED)
            return resp
        want = signed and do
        soa = data[origin][dns.rdatatype.SOA]
        sets = data.get(qname)
        if sets is not None and qtype in sets:
            self._signed(resp.answer, sets[qtype], want)
            return resp
        if sets is not None and dns.rdatatype.CNAME in sets:
            # an alias: its CNAME alone; the resolver follows it
            self._signed(resp.answer, sets[dns.rdatatype.CNAME], want)
            return resp
        if sets is not None or any(n.is_subdomain(qname) for n in data):
            # NODATA (an empty non-terminal too: its NSEC is the one before)
            self._signed(resp.authority, soa, want)
            if want:
                owner = qname if sets is not None else self._covering(qname)
                self._signed(resp.authority,
                             self.data[owner][dns.rdatatype.NSEC], True)
            return resp
        resp.set_rcode(dns.rcode.NXDOMAIN)
        self._signed(resp.authority, soa, want)
        if want:
            owners = {self._covering(qname), origin}
            for owner in sorted(owners):
                self._signed(resp.authority,
                             self.data[owner][dns.rdatatype.NSEC], True)
        return resp

    def _serve(self):
        while True:
            packet, peer = self.sock.recvfrom(4096)
            try:
                query = dns.message.from_wire(packet)
                q = query.question[0]
                print("query %s %s" % (q.name.to_text(omit_final_dot=True),
                                       dns.rdatatype.to_text(q.rdtype)),
                      file=sys.stderr, flush=True)
                resp = self.answer(query)
                size = max(512, query.payload) if query.edns >= 0 else 512
                wire = resp.to_wire(max_size=size)
            except dns.exception.TooBig:
                resp = dns.message.make_response(query)
                resp.flags |= dns.flags.TC
                wire = resp.to_wire()
            except Exception:  # a malformed query: no answer
                continue
            try:
                self.sock.sendto(wire, peer)
            except OSError:
                pass



def main():
    with open(sys.argv[1]) as f:
        conf = json.load(f)
    server = SignedDns(conf["zone"], conf["records"],
                       unsigned_zone=conf.get("unsigned_zone"),
                       unsigned=conf.get("unsigned", ()),
                       bogus=conf.get("bogus", ()),
                       anchor_path=conf["anchor"])
    print(server.port, flush=True)
    server._serve()


if __name__ == "__main__":
    main()
