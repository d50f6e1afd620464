"""milter_peer - a test milter on pymilter (python3-milter, a binding of
Sendmail's libmilter, which we did not write): run as
`milter_peer.py PORT`, it listens on inet:PORT@127.0.0.1.

What it does is chosen by the addresses of each message:
  MAIL FROM tempfail@...  -> TEMPFAIL
  MAIL FROM hang@...      -> sleeps 12 s, then CONTINUE (a hung milter)
  RCPT TO   reject@...    -> REJECT with "550 5.7.1 rejected by the test milter"
  RCPT TO   discard@...   -> DISCARD
At the end of each message that gets there it adds "X-Milter-Seen: <the
Subject it saw> / <body lines>", inserts "X-Milter-Top: first" as the first
header, changes the first Subject: to "changed by milter" and deletes the
first X-Remove-Me: header; when a recipient was bcc-me@..., it adds the
recipient <archive@dest.test>; when a recipient was quarantine@..., it
quarantines the message ("held by the test milter"); when a recipient
was newbody@..., it replaces the body with "replaced body" lines; when one
was bigbody-N@..., it replaces the body with N MiB of text. It does not
answer body chunks (Milter.noreply: SMFIP_NR_BODY when offered).
"""

import sys
import time

import Milter


class TestMilter(Milter.Base):
    def __init__(self):
        self.subject = ""
        self.body_lines = 0

    def envfrom(self, mailfrom, *args):
        self.subject = ""
        self.body_lines = 0
        self.bcc = False
        self.hold = False
        self.newbody = None
        if mailfrom.lower().startswith("<tempfail@"):
            return Milter.TEMPFAIL
        if mailfrom.lower().startswith("<hang@"):
            time.sleep(12)
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        if to.lower().startswith("<reject@"):
            self.setreply("550", "5.7.1", "rejected by the test milter")
            return Milter.REJECT
        if to.lower().startswith("<discard@"):
            return Milter.DISCARD
        if to.lower().startswith("<bcc-me@"):
            self.bcc = True
        if to.lower().startswith("<quarantine@"):
            self.hold = True
        if to.lower().startswith("<newbody@"):
            self.newbody = b"replaced body\r\nsecond line\r\n"
        if to.lower().startswith("<bigbody-"):
            mib = int(to[len("<bigbody-"):].split("@")[0])
            self.newbody = (b"x" * 1022 + b"\r\n") * (1024 * mib)
        return Milter.CONTINUE

    def header(self, name, value):
        if name.lower() == "subject" and not self.subject:
            self.subject = value
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):
        self.body_lines += chunk.count(b"\r\n")
        return Milter.CONTINUE

    def eom(self):
        self.addheader("X-Milter-Seen",
                       "%s / %d" % (self.subject, self.body_lines))
        self.addheader("X-Milter-Top", "first", 0)
        self.chgheader("Subject", 1, "changed by milter")
        self.chgheader("X-Remove-Me", 1, "")
        if self.bcc:
            self.addrcpt("<archive@dest.test>")
        if self.hold:
            self.quarantine("held by the test milter")
        if self.newbody is not None:
            for i in range(0, len(self.newbody), 1 << 20):
                self.replacebody(self.newbody[i:i + (1 << 20)])
        return Milter.ACCEPT


def main():
    port = int(sys.argv[1])
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT |
                     Milter.QUARANTINE | Milter.CHGBODY)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Milter.runmilter("sluicetest", "inet:%d@127.0.0.1" % port, 60)


if __name__ == "__main__":
    main()
