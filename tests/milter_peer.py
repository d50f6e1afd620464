"""milter_peer - a test milter on pymilter (python3-milter, a binding of
Sendmail's libmilter, which we did not write): run as
`milter_peer.py PORT [CONTROL_DIR]`, it listens on inet:PORT@127.0.0.1.

What it does is chosen by the addresses of each message:
  MAIL FROM tempfail@...  -> TEMPFAIL
  MAIL FROM reject@...    -> REJECT with "550 5.7.1 rejected by the test milter"
  any MAIL FROM, while CONTROL_DIR/tempfail exists -> TEMPFAIL
  MAIL FROM hang@...      -> sleeps 12 s, then CONTINUE (a hung milter)
  RCPT TO   reject@...    -> REJECT with "550 5.7.1 rejected by the test milter"
  RCPT TO   discard@...   -> DISCARD
  RCPT TO   stall@...     -> at the end of the message, never a verdict:
                             a progress packet every 0.5 s (each starts
                             the MTA's timeout over), for 3 minutes
At the end of each message that gets there it adds "X-Milter-Seen: <the
Subject it saw> / <body lines>", inserts "X-Milter-Top: first" as the first
header, changes the first Subject: to "changed by milter" and deletes the
first X-Remove-Me: header; when a recipient was bcc-me@..., it adds the
recipient <archive@dest.test>; when a recipient was quarantine@..., it
quarantines the message ("held by the test milter"); when a recipient
was newbody@..., it replaces the body with "replaced body" lines; when one
was bigbody-N@..., it replaces the body with N MiB of text. It does not
answer body chunks (Milter.noreply: SMFIP_NR_BODY when offered).
When the message has an X-Replace-Body: header, it replaces the body with
"replaced by the test milter" (with "X-Replace-Body: big", 2000 lines of
78 x's). It also adds "X-Milter-Env: client=<name>/<address>
mail_addr=<{mail_addr}> rcpt_addr=<{rcpt_addr}> i=<i> daemon=<{daemon_name}>"
with what the MTA told it (CONNECT, and the macros of MAIL, RCPT, EOM).
"""

import os

import sys
import time

import Milter


class TestMilter(Milter.Base):
    def __init__(self):
        self.subject = ""
        self.body_lines = 0
        self.client = "?"

    def connect(self, hostname, family, hostaddr):
        addr = hostaddr[0] if isinstance(hostaddr, tuple) else hostaddr
        self.client = "%s/%s" % (hostname, addr)
        return Milter.CONTINUE

    def envfrom(self, mailfrom, *args):
        self.subject = ""
        self.body_lines = 0
        self.bcc = False
        self.hold = False
        self.newbody = None
        self.replace_body = False
        self.stall = False
        self.mail_addr = self.getsymval("{mail_addr}")
        self.rcpt_addr = None
        if mailfrom.lower().startswith("<tempfail@"):
            return Milter.TEMPFAIL
        if CONTROL and os.path.exists(os.path.join(CONTROL, "tempfail")):
            return Milter.TEMPFAIL
        if mailfrom.lower().startswith("<reject@"):
            self.setreply("550", "5.7.1", "rejected by the test milter")
            return Milter.REJECT
        if mailfrom.lower().startswith("<hang@"):
            time.sleep(12)
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        if self.rcpt_addr is None:
            self.rcpt_addr = self.getsymval("{rcpt_addr}")
        if to.lower().startswith("<reject@"):
            self.setreply("550", "5.7.1", "rejected by the test milter")
            return Milter.REJECT
        if to.lower().startswith("<discard@"):
            return Milter.DISCARD
        if to.lower().startswith("<stall@"):
            self.stall = True
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
        if name.lower() == "x-replace-body":
            self.replace_body = value.strip()
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):
        self.body_lines += chunk.count(b"\r\n")
        return Milter.CONTINUE

    def eom(self):
        if self.stall:
            for _ in range(360):
                try:
                    self.progress()
                except Exception:
                    break  # the MTA is gone
                time.sleep(0.5)
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
        if self.replace_body == "big":
            self.replacebody((b"x" * 78 + b"\r\n") * 2000)
        elif self.replace_body:
            self.replacebody(b"replaced by the test milter\r\n")
        self.addheader("X-Milter-Env",
                       "client=%s mail_addr=%s rcpt_addr=%s i=%s daemon=%s"
                       % (self.client, self.mail_addr, self.rcpt_addr,
                          self.getsymval("i"),
                          self.getsymval("{daemon_name}")))
        return Milter.ACCEPT


CONTROL = None


def main():
    global CONTROL
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        CONTROL = sys.argv[2]
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT |
                     Milter.QUARANTINE | Milter.CHGBODY)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    Milter.runmilter("sluicetest", "inet:%d@127.0.0.1" % port, 60)


if __name__ == "__main__":
    main()
