"""test_track - open and click tracking, One-Click unsubscribe (tracker #22)

An instance with the api service (tracking_base_url pointing at it) and a
relayhost sink. Messages go in over SMTP from loopback (in mynetworks, so
X-Sluice-Track and X-Sluice-List are honoured) signed by the DKIM key
`sluice init` made; what the sink gets is parsed with Python's email
package and verified with dkimpy. The links are then followed over real
HTTP to the api, and the events looked up in the journal.
"""

import base64
import smtplib
import email
import email.policy
import http.client
import json
import os
import pwd
import re
import subprocess
import time
import urllib.parse

import pytest

from conftest import LIBEXEC, SLUICE, free_port, require, smtp_queue, wait_until
from test_feedback import journal

try:
    import dkim
except ImportError:
    dkim = None


def request(port, method, path, body=None, headers=None):
    """One request: (status, headers dict with lower-case names, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


class Track:
    """An instance with api, tracking on the api's port, a relayhost sink."""

    def __init__(self, make_instance, make_sink, **params):
        require(LIBEXEC / "api", LIBEXEC / "cleanup", SLUICE)
        self.sink = make_sink()
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        conf = {"api_listen": "127.0.0.1:%d" % self.port,
                "tracking_base_url": self.base,
                "unsubscribe_mailto_domain": "bounce.test"}
        conf.update(params)
        conf = {k: v for k, v in conf.items() if v is not None}  # None: unset
        self.inst = make_instance(relayhost="[127.0.0.1]:%d" % self.sink.port,
                                  params=conf)
        origin = self.inst.conf_get("myorigin")
        if origin == "$myhostname":
            origin = self.inst.conf_get("myhostname")
        self.origin = origin.lower()
        self.make_key()
        self.inst.start()
        wait_until(lambda: self.get("/v1/health")[0] == 200, 10,
                   what="the api to answer")

    def make_key(self):
        """The feedback key: made by `sluice init` for the mail owner (the
        daemons, as mail_owner, could not make it in a data_directory
        that root owns)."""
        path = self.inst.dir / "data" / "feedback.key"
        assert path.stat().st_size == 32

    def get(self, path, **kw):
        try:
            return request(self.port, "GET", path, **kw)
        except OSError:
            return (0, {}, b"")

    def events(self, kind=None):
        top = self.inst.queue_dir / "events"
        out = []
        for seg in sorted(top.glob("*.jsonl")):
            for line in seg.read_text().splitlines():
                ev = json.loads(line)
                if kind is None or ev["kind"] == kind:
                    out.append(ev)
        return out

    def dkim_keys(self):
        key = self.inst.dir / "data" / "dkim" / ("%s.sluice.pem" % self.origin)
        der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout",
                              "-outform", "DER"], capture_output=True,
                             check=True).stdout
        txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
        name = ("sluice._domainkey.%s." % self.origin).encode()
        return lambda n, timeout=5: txt if n == name else b""


@pytest.fixture
def track(make_instance, make_sink):
    return Track(make_instance, make_sink)


def qp(text):
    """Quoted-printable with soft breaks every 40 bytes, so links split."""
    out = []
    for line in text.split("\n"):
        enc = line.replace("=", "=3D")
        while len(enc) > 40:
            cut = 40
            while enc[cut - 1] == "=" or enc[cut - 2] == "=":
                cut -= 1
            out.append(enc[:cut] + "=")
            enc = enc[cut:]
        out.append(enc)
    return "\n".join(out)


HTML = ("<html><body>\n"
        "<p><a href=\"https://shop.example.test/item?id=7&amp;ref=mail\">item</a>\n"
        "<A HREF='http://news.example.test/a/b'>news</A>\n"
        "<a href=\"mailto:help@example.test\">mail us</a>\n"
        "<a href=\"#top\">top</a>\n"
        "<a class=x href = https://bare.example.test/x>bare</a></p>\n"
        "</body></html>\n")
ORIGINALS = ["https://shop.example.test/item?id=7&ref=mail",
             "http://news.example.test/a/b",
             "https://bare.example.test/x"]


def message(origin, html_part, extra=""):
    return ("From: Shop <shop@%s>\r\n"
            "To: alice@rcpt.test\r\n"
            "Subject: tracked\r\n"
            "Message-ID: <%d@%s>\r\n"
            "MIME-Version: 1.0\r\n"
            "%s"
            "Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
            "\r\n"
            "preamble\r\n"
            "--b1\r\n"
            "Content-Type: text/plain\r\n"
            "\r\n"
            "See https://shop.example.test/item?id=7\r\n"
            "--b1\r\n"
            "%s\r\n"
            "--b1--\r\n" % (origin, time.monotonic_ns(), origin, extra,
                            html_part.replace("\n", "\r\n"))).encode()


def parse(received):
    return email.message_from_bytes(received.data.replace(b"\r\n", b"\n"),
                                    policy=email.policy.default)


def html_of(msg):
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            return part.get_content()
    return None


def links(html):
    return re.findall(r"""href\s*=\s*["']?([^"' >]+)""", html, re.I)


def test_tracked_message_links_pixel_headers_dkim(track):
    """A multipart/alternative message whose HTML part is quoted-printable
    (links split across soft line breaks, single quotes, upper-case HREF,
    an entity in a URL, a bare attribute value) with X-Sluice-Track: opens,
    clicks and X-Sluice-List: news: the sink gets both X- headers removed,
    every http(s) link of the HTML rewritten to BASE/c/TOKEN (mailto: and
    the anchor left alone, the text part untouched), one 1x1 pixel before
    </body>, List-Unsubscribe with the https URL and the (short) mailto,
    List-Unsubscribe-Post One-Click, lines within 998 bytes, and a DKIM
    signature that dkimpy verifies and whose h= covers both List- headers."""
    html_part = ("Content-Type: text/html; charset=utf-8\n"
                 "Content-Transfer-Encoding: quoted-printable\n\n" + qp(HTML))
    qid = smtp_queue(track.inst, "shop@%s" % track.origin, ["alice@rcpt.test"],
                     message(track.origin, html_part,
                             "X-Sluice-Track: opens, clicks\r\n"
                             "X-Sluice-List: news\r\n"))
    (got,) = track.sink.wait_messages(1)
    msg = parse(got)
    assert "X-Sluice-Track" not in msg and "X-Sluice-List" not in msg
    for line in got.data.split(b"\r\n"):
        assert len(line) <= 998
    html = html_of(msg)
    found = links(html)
    assert "mailto:help@example.test" in found and "#top" in found
    tracked = [u for u in found if u.startswith(track.base + "/c/")]
    assert len(tracked) == 3, html
    assert not any(u in html for u in ORIGINALS[1:])
    pixels = re.findall(r'<img src="(%s/o/[a-z2-7]+)"' % re.escape(track.base),
                        html)
    assert len(pixels) == 1 and html.index(pixels[0]) < html.lower().index("</body>")
    text = [p for p in msg.walk() if p.get_content_type() == "text/plain"][0]
    assert text.get_content().strip() == "See https://shop.example.test/item?id=7"
    unsub = msg["List-Unsubscribe"]
    m = re.fullmatch(r"<(%s/u/([a-z2-7]+))>,\s*<mailto:(unsubscribe\+"
                     r"[0-9a-y]{16}-[a-z2-7]{20})@bounce\.test"
                     r"\?subject=unsubscribe%%20([a-z2-7]+)>"
                     % re.escape(track.base), unsub)
    assert m, unsub
    assert len(m.group(3)) <= 64  # RFC 5321's local-part limit
    assert m.group(2) == m.group(4)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    if dkim is None:
        pytest.skip("dkimpy is not installed (Debian package python3-dkim)")
    sig = msg["DKIM-Signature"]
    h = re.search(r"\bh=([^;]+)", re.sub(r"\s+", "", sig)).group(1).lower().split(":")
    assert "list-unsubscribe" in h and "list-unsubscribe-post" in h
    assert dkim.verify(got.data, dnsfunc=track.dkim_keys())

    # The clicks: each link redirects to its original URL, with an event.
    for url, original in zip(tracked, ORIGINALS):
        status, headers, _ = track.get(urllib.parse.urlsplit(url).path,
                                       headers={"User-Agent": "pytest-ua"})
        assert status == 302 and headers["location"] == original
    clicks = track.events("clicked")
    assert [e["url"] for e in clicks] == ORIGINALS
    assert all(e["qid"] == qid and e["recipient"] == "alice@rcpt.test"
               and e["user_agent"] == "pytest-ua" for e in clicks)

    # A tampered token (one character changed): refused, no redirect, no event.
    path = urllib.parse.urlsplit(tracked[0]).path
    i = len(path) - 5
    bad = path[:i] + ("a" if path[i] != "a" else "b") + path[i + 1:]
    status, headers, _ = track.get(bad)
    assert status in (400, 404) and "location" not in headers
    # A click token used as an open token (another purpose): refused.
    status, headers, _ = track.get(path.replace("/c/", "/o/"))
    assert status == 404
    assert len(track.events("clicked")) == 3 and track.events("opened") == []

    # The pixel: a GIF, and an opened event.
    status, headers, body = track.get(urllib.parse.urlsplit(pixels[0]).path)
    assert status == 200 and headers["content-type"] == "image/gif"
    assert body.startswith(b"GIF89a")
    (opened,) = track.events("opened")
    assert opened["qid"] == qid and opened["recipient"] == "alice@rcpt.test"

    # GET /u/ shows a form and unsubscribes nobody; the POST does.
    upath = urllib.parse.urlsplit(m.group(1)).path
    status, _, page = track.get(upath)
    assert status == 200 and b'method="post"' in page and b"One-Click" in page
    assert track.events("unsubscribed") == []
    status, _, _ = request(track.port, "POST", upath, body=b"nothing=here",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and track.events("unsubscribed") == []
    status, _, _ = request(track.port, "POST", upath,
                        body=b"List-Unsubscribe=One-Click",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    (unsub_ev,) = track.events("unsubscribed")
    assert unsub_ev["recipient"] == "alice@rcpt.test"
    assert unsub_ev["list"] == "news" and unsub_ev["qid"] == qid
    assert unsub_ev["tenant"] is None
    # A tampered unsubscribe token: refused, no event.
    status, _, _ = request(track.port, "POST", upath[:-3] + "aaa",
                        body=b"List-Unsubscribe=One-Click")
    assert status == 404 and len(track.events("unsubscribed")) == 1


def test_base64_html_and_several_recipients(track):
    """A base64 text/html message to two recipients: its links and pixel
    are rewritten (the part re-encoded as base64 in lines of 76), with
    per-message tokens: the click event names the message but no
    recipient; no List-Unsubscribe is added (it could not say whom)."""
    body = base64.encodebytes(HTML.encode()).decode()
    raw = ("From: shop@%s\r\nTo: a@rcpt.test, b@rcpt.test\r\n"
           "Subject: b64\r\nMIME-Version: 1.0\r\n"
           "X-Sluice-Track: clicks opens\r\nX-Sluice-List: news\r\n"
           "Content-Type: text/html; charset=utf-8\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n%s"
           % (track.origin, body.replace("\n", "\r\n"))).encode()
    qid = smtp_queue(track.inst, "shop@%s" % track.origin,
                     ["a@rcpt.test", "b@rcpt.test"], raw)
    (got,) = track.sink.wait_messages(1)
    msg = parse(got)
    assert "List-Unsubscribe" not in msg
    raw_body = got.data.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in raw_body.split(b"\r\n"))
    html = msg.get_content()
    tracked = [u for u in links(html) if u.startswith(track.base + "/c/")]
    assert len(tracked) == 3 and "/o/" in html
    status, headers, _ = track.get(urllib.parse.urlsplit(tracked[1]).path)
    assert status == 302 and headers["location"] == ORIGINALS[1]
    (ev,) = track.events("clicked")
    assert ev["qid"] == qid and ev["recipient"] is None


def test_untrusted_or_off_leaves_message_alone(make_instance, make_sink):
    """Tracking off (track_opens, track_clicks default no) and no list: the
    message arrives with its HTML byte for byte, the X-Sluice-Track header
    removed, no List-Unsubscribe; a path like /c/junk gets 404."""
    track = Track(make_instance, make_sink)
    html_part = "Content-Type: text/html\n\n" + HTML
    smtp_queue(track.inst, "shop@%s" % track.origin, ["alice@rcpt.test"],
               message(track.origin, html_part, "X-Sluice-Track: none\r\n"))
    (got,) = track.sink.wait_messages(1)
    msg = parse(got)
    assert "X-Sluice-Track" not in msg and "List-Unsubscribe" not in msg
    assert html_of(msg) == HTML
    status, headers, _ = track.get("/c/junk")
    assert status == 404 and "location" not in headers


def test_defaults_on_and_own_list_unsubscribe_kept(make_instance, make_sink):
    """track_clicks = yes for every message; a message with its own List-Id
    and List-Unsubscribe keeps its List-Unsubscribe (none added), and a
    link to our own unsubscribe base is not rewritten."""
    track = Track(make_instance, make_sink, track_clicks="yes")
    own = track.base + "/u/own"
    html_part = ("Content-Type: text/html\n\n<a href=\"%s\">u</a> "
                 "<a href=\"https://x.example.test/\">x</a>\n" % own)
    smtp_queue(track.inst, "shop@%s" % track.origin, ["alice@rcpt.test"],
               message(track.origin, html_part,
                       "List-Id: News <news.example.test>\r\n"
                       "List-Unsubscribe: <mailto:u@example.test>\r\n"))
    (got,) = track.sink.wait_messages(1)
    msg = parse(got)
    assert msg.get_all("List-Unsubscribe") == ["<mailto:u@example.test>"]
    assert "List-Unsubscribe-Post" not in msg
    found = links(html_of(msg))
    assert found[0] == own and found[1].startswith(track.base + "/c/")
    assert "/o/" not in html_of(msg)


def test_api_batch_per_recipient_unsubscribe(make_instance, make_sink):
    """An API batch (one message per recipient) with the headers field
    carrying X-Sluice-Track: clicks and X-Sluice-List: news: each message
    gets its own List-Unsubscribe, and the One-Click POST of the second
    records an unsubscribed event naming that recipient, the key's tenant
    and the list (what the suppression follower needs)."""
    track = Track(make_instance, make_sink, suppression_feedback_enable="yes")
    out = track.inst.check("api", "key", "create", "acme", "--scope", "send")
    key = out.strip().splitlines()[-1]
    body = {"from": "shop@%s" % track.origin, "subject": "hi",
            "html": "<p><a href=\"https://shop.example.test/\">shop</a></p>",
            "headers": {"X-Sluice-Track": "clicks", "X-Sluice-List": "news"},
            "recipients": [{"to": "a@rcpt.test"}, {"to": "b@rcpt.test"}]}
    status, _, answer = request(track.port, "POST", "/v1/messages",
                                body=json.dumps(body).encode(),
                                headers={"Authorization": "Bearer " + key,
                                         "Content-Type": "application/json"})
    assert status == 202, answer
    got = track.sink.wait_messages(2)
    by_rcpt = {parse(m)["To"]: parse(m) for m in got}
    assert set(by_rcpt) == {"a@rcpt.test", "b@rcpt.test"}
    for msg in by_rcpt.values():
        assert "X-Sluice-Track" not in msg and "X-Sluice-List" not in msg
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert links(html_of(msg))[0].startswith(track.base + "/c/")
    assert by_rcpt["a@rcpt.test"]["List-Unsubscribe"] != \
        by_rcpt["b@rcpt.test"]["List-Unsubscribe"]
    url = re.match(r"<([^>]+)>", by_rcpt["b@rcpt.test"]["List-Unsubscribe"]).group(1)
    status, _, _ = request(track.port, "POST", urllib.parse.urlsplit(url).path,
                           body=b"List-Unsubscribe=One-Click",
                           headers={"Content-Type":
                                    "application/x-www-form-urlencoded"})
    assert status == 200
    (ev,) = track.events("unsubscribed")
    assert (ev["recipient"], ev["tenant"], ev["list"]) == \
        ("b@rcpt.test", "acme", "news")
    # the suppression feed makes it an entry of acme's list: acme's next
    # message to b is not sent (reported in the 202), to a it is
    wait_until(lambda: track.inst.command(
        "suppress", "check", "--tenant", "acme", "b@rcpt.test").returncode == 0,
        timeout=30, what="the unsubscribe's suppression entry")
    assert track.inst.command("suppress", "check", "--tenant", "acme",
                              "a@rcpt.test").returncode == 1
    body["recipients"] = [{"to": "a@rcpt.test"}, {"to": "b@rcpt.test"}]
    status, _, answer = request(track.port, "POST", "/v1/messages",
                                body=json.dumps(body).encode(),
                                headers={"Authorization": "Bearer " + key,
                                         "Content-Type": "application/json"})
    assert status == 202, answer
    assert "b@rcpt.test" in answer.decode() and "suppressed" in answer.decode()
    got = track.sink.wait_messages(3)
    assert [parse(m)["To"] for m in got[2:]] == ["a@rcpt.test"]


def test_untrusted_client_mail_passes_unchanged(make_instance, make_sink):
    """track_clicks = yes and track_opens = yes, but the client is not in
    mynetworks (mail relayed for relay_domains): its HTML, its List-Id and
    the lack of List-Unsubscribe pass unchanged; X-Sluice-Track is still
    removed."""
    track = Track(make_instance, make_sink, track_clicks="yes",
                  track_opens="yes", mynetworks="10.9.9.0/24",
                  relay_domains="rcpt.test")
    html_part = "Content-Type: text/html\n\n" + HTML
    smtp_queue(track.inst, "shop@remote.test", ["alice@rcpt.test"],
               message("remote.test", html_part,
                       "List-Id: <news.remote.test>\r\n"
                       "X-Sluice-Track: opens, clicks\r\n"))
    (got,) = track.sink.wait_messages(1)
    msg = parse(got)
    assert html_of(msg) == HTML
    assert "List-Unsubscribe" not in msg and "X-Sluice-Track" not in msg


def mail_from_outside(inst, sender, to, data):
    """One message over SMTP from 127.0.0.3, outside mynetworks (as a
    recipient's mail program would reach the MX): (code, text) of RCPT,
    then of DATA when RCPT took it."""
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30,
                      source_address=("127.0.0.3", 0)) as client:
        client.ehlo("mua.rcpt.test")
        code, text = client.mail(sender)
        assert code == 250, text
        code, text = client.rcpt(to)
        if code != 250:
            return code, text
        return client.data(data)


def of_kind(track, kind):
    """The journal's events of kind (a torn last line left out)."""
    return [e for e in journal(track.inst) if e["kind"] == kind]


MAILTO_RE = (r"<mailto:(unsubscribe\+([0-9a-y]{16})-[a-z2-7]{20})"
             r"@verp\.test\?subject=unsubscribe%20([a-z2-7]+)>")


def test_mailto_unsubscribe_by_mail(make_instance, make_sink):
    """bounce_verp_domain = verp.test and unsubscribe_mailto_domain unset:
    a one-recipient message of list news carries List-Unsubscribe with
    the https URL and <mailto:unsubscribe+QID-MAC@verp.test> (the default
    domain; the short form, 49 octets: the message's queue ID and a MAC;
    the subject it asks for is the https URL's token).
    Mail to that address (upper-cased, from the recipient, from a client
    outside mynetworks) is accepted, goes to the feedback service and not
    to the sink, and records an unsubscribed event for the original queue
    ID and recipient, which the suppression feed turns into an entry. A
    tampered MAC is accepted too but records feedback_unparsed and no
    unsubscribe."""
    track = Track(make_instance, make_sink, mynetworks="127.0.0.1/32",
                  bounce_verp_domain="verp.test",
                  unsubscribe_mailto_domain=None,
                  suppression_feedback_enable="yes")
    html_part = "Content-Type: text/html\n\n" + HTML
    qid = smtp_queue(track.inst, "shop@%s" % track.origin, ["alice@rcpt.test"],
                     message(track.origin, html_part,
                             "X-Sluice-List: news\r\n"))
    (got,) = track.sink.wait_messages(1)
    unsub = parse(got)["List-Unsubscribe"]
    m = re.fullmatch(r"<%s/u/([a-z2-7]+)>,\s*%s" % (re.escape(track.base),
                                                   MAILTO_RE), unsub)
    assert m and m.group(3) == qid.lower(), unsub
    assert m.group(4) == m.group(1)  # the subject asked for: the URL's token
    mailto = m.group(2)
    assert len(mailto) == 49
    wait_delivered(track, [qid])
    assert track.inst.command("suppress", "check",
                              "alice@rcpt.test").returncode == 1

    # A tampered MAC, even from the recipient: taken (it looks like ours),
    # recorded as unparsed.
    i = len("unsubscribe+") + 20
    bad = mailto[:i] + ("a" if mailto[i] != "a" else "b") + mailto[i + 1:]
    body = (b"From: alice@rcpt.test\r\nTo: %s\r\nSubject: unsubscribe\r\n"
            b"\r\nunsubscribe\r\n")
    code, text = mail_from_outside(track.inst, "alice@rcpt.test",
                                   bad + "@verp.test",
                                   body % bad.encode())
    assert code == 250, text
    (unparsed,) = wait_until(lambda: of_kind(track, "feedback_unparsed"),
                             timeout=30, what="the feedback_unparsed event")
    assert unparsed["recipient"] == bad + "@verp.test"
    assert "unsubscribe" in unparsed["reply"] and "forged" in unparsed["reply"]
    assert of_kind(track, "unsubscribed") == []

    # The real one, upper-cased as some programs do, from the recipient.
    code, text = mail_from_outside(track.inst, "alice@rcpt.test",
                                   mailto.upper() + "@VERP.TEST",
                                   body % mailto.encode())
    assert code == 250, text
    (ev,) = wait_until(lambda: of_kind(track, "unsubscribed"), timeout=30,
                       what="the unsubscribed event")
    assert (ev["qid"], ev["recipient"], ev["tenant"]) == \
        (qid, "alice@rcpt.test", None)
    assert ev.get("list") is None  # the short form carries no list
    track.inst.wait_log(r"relay=feedback, .*status=sent", count=2, timeout=30)
    assert "unsubscribed by mail" in track.inst.log()
    def suppressed():
        r = track.inst.command("suppress", "check", "alice@rcpt.test")
        assert r.returncode in (0, 1), r.stderr
        return r.stdout if r.returncode == 0 else None
    reason = wait_until(suppressed, timeout=30,
                        what="the unsubscribe's suppression entry")
    assert "unsubscribed" in reason, reason
    # Neither went to the sink: parsed, never delivered.
    assert len(track.sink.messages) == 1


def wait_delivered(track, qids):
    """Until qmgr has recorded each message's delivery (the sink has it a
    moment before): the journal then names its recipient, and a stop no
    longer makes qmgr send it again."""
    wait_until(lambda: set(qids) <= {e["qid"] for e in
                                     of_kind(track, "delivered")},
               timeout=30, what="the delivered events")


def forget_journal(track):
    """The journal forgets every message: its segments are removed while
    the instance is stopped (as exporters past them would)."""
    track.inst.stop()
    for seg in (track.inst.queue_dir / "events").glob("*.jsonl"):
        seg.unlink()
    track.inst.start()
    wait_until(lambda: track.get("/v1/health")[0] == 200, 10,
               what="the api to answer")


def suppressed(track, address, tenant=None):
    args = ["suppress", "check"] + (["--tenant", tenant] if tenant else [])
    r = track.inst.command(*(args + [address]))
    assert r.returncode in (0, 1), r.stderr
    return r.returncode == 0


def test_mailto_short_form_who_may_unsubscribe(make_instance, make_sink):
    """The short mailto names only the message; the MAC decides whom it
    unsubscribes. While the journal has the message, mail from any
    address (a forwarding mailbox) unsubscribes the message's recipient.
    After the journal forgot it: mail from the recipient (envelope and
    From:) still unsubscribes it; mail from another address is recorded
    as feedback_unparsed and unsubscribes nobody (neither the recipient
    nor the sender). The long form unsubscribe+TOKEN of mail sent before
    (the https URL's token) still works, list included, from anyone; so
    does the short form whose mail keeps the subject its mailto asks for
    (that token)."""
    track = Track(make_instance, make_sink, mynetworks="127.0.0.1/32",
                  bounce_verp_domain="verp.test",
                  unsubscribe_mailto_domain=None,
                  suppression_feedback_enable="yes")
    html_part = "Content-Type: text/html\n\n" + HTML
    sent = {}
    for n, rcpt in enumerate(["fwd@rcpt.test", "carol@rcpt.test",
                              "dave@rcpt.test", "erin@rcpt.test",
                              "gina@rcpt.test"]):
        qid = smtp_queue(track.inst, "shop@%s" % track.origin, [rcpt],
                         message(track.origin, html_part,
                                 "X-Sluice-List: news\r\n"))
        got = track.sink.wait_messages(n + 1)[n]
        unsub = parse(got)["List-Unsubscribe"]
        m = re.fullmatch(r"<%s/u/([a-z2-7]+)>,\s*%s" % (
            re.escape(track.base), MAILTO_RE), unsub)
        assert m and m.group(3) == qid.lower(), unsub
        sent[rcpt] = (qid, m.group(2), m.group(1))

    def unsubscribe(sender, local, count, subject="unsubscribe"):
        code, text = mail_from_outside(
            track.inst, sender, local + "@verp.test",
            b"From: <%s>\r\nSubject: %s\r\n\r\nunsubscribe\r\n"
            % (sender.encode(), subject.encode()))
        assert code == 250, text
        track.inst.wait_log(r"relay=feedback, .*status=sent", count=count,
                            timeout=30)

    wait_delivered(track, [q for q, _, _ in sent.values()])
    # From a forwarding mailbox, while the journal has the message.
    unsubscribe("owner@elsewhere.test", sent["fwd@rcpt.test"][1], 1)
    (ev,) = of_kind(track, "unsubscribed")
    assert (ev["qid"], ev["recipient"]) == (sent["fwd@rcpt.test"][0],
                                            "fwd@rcpt.test")
    wait_until(lambda: suppressed(track, "fwd@rcpt.test"), timeout=30,
               what="fwd's suppression")

    forget_journal(track)
    # From the recipient itself (another letter case): unsubscribed.
    unsubscribe("Carol@RCPT.test", sent["carol@rcpt.test"][1], 2)
    (ev,) = of_kind(track, "unsubscribed")
    assert (ev["qid"], ev["recipient"].lower()) == \
        (sent["carol@rcpt.test"][0], "carol@rcpt.test")
    wait_until(lambda: suppressed(track, "carol@rcpt.test"), timeout=30,
               what="carol's suppression")
    # From another address: nobody unsubscribed, recorded as unparsed.
    unsubscribe("mallory@evil.test", sent["dave@rcpt.test"][1], 3)
    (bad,) = of_kind(track, "feedback_unparsed")
    assert "not verified" in bad["reply"] and "journal" in bad["reply"]
    assert len(of_kind(track, "unsubscribed")) == 1
    # The long form of mail sent before, from anyone, after the journal
    # forgot: its token names recipient and list.
    unsubscribe("mallory@evil.test", "unsubscribe+" + sent["erin@rcpt.test"][2],
                4)
    # (each feedback process writes its own segment: no order across them)
    evs = {e["recipient"].lower(): e for e in of_kind(track, "unsubscribed")}
    assert set(evs) == {"carol@rcpt.test", "erin@rcpt.test"}
    assert (evs["erin@rcpt.test"]["qid"], evs["erin@rcpt.test"]["list"]) == \
        (sent["erin@rcpt.test"][0], "news")
    wait_until(lambda: suppressed(track, "erin@rcpt.test"), timeout=30,
               what="erin's suppression")
    # The short form with the subject its mailto asks for (the https
    # token), from another address, after the journal forgot: the token
    # says whom, and the list.
    unsubscribe("owner@elsewhere.test", sent["gina@rcpt.test"][1], 5,
                subject="Re: unsubscribe " + sent["gina@rcpt.test"][2])
    evs = {e["recipient"].lower(): e for e in of_kind(track, "unsubscribed")}
    assert set(evs) == {"carol@rcpt.test", "erin@rcpt.test", "gina@rcpt.test"}
    assert (evs["gina@rcpt.test"]["qid"], evs["gina@rcpt.test"]["list"]) == \
        (sent["gina@rcpt.test"][0], "news")
    wait_until(lambda: suppressed(track, "gina@rcpt.test"), timeout=30,
               what="gina's suppression")
    assert not suppressed(track, "dave@rcpt.test")
    assert not suppressed(track, "mallory@evil.test")
    assert not suppressed(track, "owner@elsewhere.test")
    assert len(track.sink.messages) == 5


def test_mailto_short_form_long_recipient_and_tenant(make_instance,
                                                     make_sink):
    """An API message for a tenant of 64 characters to a recipient of 64 +
    1 + 60 octets: the mailto's local part is 49 octets (the long form
    would be well over 200). After the journal forgot the message, mail
    from the recipient unsubscribes it for that tenant: the tenant is
    found among api_keys_file's tenants by the MAC."""
    track = Track(make_instance, make_sink, mynetworks="127.0.0.1/32",
                  bounce_verp_domain="verp.test",
                  unsubscribe_mailto_domain=None,
                  suppression_feedback_enable="yes")
    tenant = "t" * 60 + "-Acm"
    track.inst.check("api", "key", "create", "other", "--scope", "send")
    out = track.inst.check("api", "key", "create", tenant, "--scope", "send")
    key = out.strip().splitlines()[-1]
    rcpt = "r" * 64 + "@" + "d" * 50 + ".rcpt.test"
    body = {"from": "shop@%s" % track.origin, "subject": "hi",
            "html": "<p>news</p>",
            "headers": {"X-Sluice-List": "news"},
            "recipients": [{"to": rcpt}]}
    status, _, answer = request(track.port, "POST", "/v1/messages",
                                body=json.dumps(body).encode(),
                                headers={"Authorization": "Bearer " + key,
                                         "Content-Type": "application/json"})
    assert status == 202, answer
    (got,) = track.sink.wait_messages(1)
    unsub = parse(got)["List-Unsubscribe"]
    m = re.search(MAILTO_RE, unsub)
    assert m, unsub
    local = m.group(1)
    assert len(local.encode()) <= 64, local
    https_token = re.search(r"/u/([a-z2-7]+)>", unsub).group(1)
    assert len("unsubscribe+" + https_token) > 200
    wait_delivered(track, [m.group(2).upper()])
    forget_journal(track)
    code, text = mail_from_outside(
        track.inst, rcpt, local + "@verp.test",
        b"From: <%s>\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n"
        % rcpt.encode())
    assert code == 250, text
    (ev,) = wait_until(lambda: of_kind(track, "unsubscribed"), timeout=30,
                       what="the unsubscribed event")
    assert (ev["qid"], ev["recipient"], ev["tenant"]) == \
        (m.group(2).upper(), rcpt, tenant)
    wait_until(lambda: suppressed(track, rcpt, tenant), timeout=30,
               what="the tenant's suppression entry")
    assert not suppressed(track, rcpt, "other")


def test_mailto_off_without_domains(make_instance, make_sink):
    """bounce_verp_domain and unsubscribe_mailto_domain both unset: no
    mailto in List-Unsubscribe, and mail to an unsubscribe+ address from
    outside mynetworks is refused as relaying, as any other."""
    track = Track(make_instance, make_sink, mynetworks="127.0.0.1/32",
                  unsubscribe_mailto_domain=None)
    html_part = "Content-Type: text/html\n\n" + HTML
    smtp_queue(track.inst, "shop@%s" % track.origin, ["alice@rcpt.test"],
               message(track.origin, html_part, "X-Sluice-List: news\r\n"))
    (got,) = track.sink.wait_messages(1)
    unsub = parse(got)["List-Unsubscribe"]
    assert re.fullmatch(r"<%s/u/[a-z2-7]+>" % re.escape(track.base), unsub), \
        unsub
    token = re.search(r"/u/([a-z2-7]+)", unsub).group(1)
    code, text = mail_from_outside(track.inst, "alice@rcpt.test",
                                   "unsubscribe+%s@verp.test" % token, b"")
    assert code == 554 and b"Relay access denied" in text, text


def test_alias_expanded_to_two_gets_per_message_tokens(make_instance,
                                                      make_sink):
    """One RCPT that virtual_alias_maps expands to two recipients: the
    message is queued for both, so its tokens are per-message: no
    List-Unsubscribe (it could not say whom), and a click names the
    message but no recipient (not the first expansion's address, which
    would credit one recipient with the other's clicks and let either
    unsubscribe both)."""
    track = Track(make_instance, make_sink,
                  virtual_alias_maps="inline:{ { team@rcpt.test = "
                                     "a@rcpt.test, b@rcpt.test } }")
    html_part = "Content-Type: text/html\n\n" + HTML
    qid = smtp_queue(track.inst, "shop@%s" % track.origin, ["team@rcpt.test"],
                     message(track.origin, html_part,
                             "X-Sluice-Track: clicks\r\n"
                             "X-Sluice-List: news\r\n"))
    got = track.sink.wait_messages(1)[0]
    wait_until(lambda: len(track.sink.recipients()) >= 2, 20,
               what="both expanded recipients at the sink")
    assert sorted(r.lower() for r in track.sink.recipients()) == \
        ["a@rcpt.test", "b@rcpt.test"]
    msg = parse(got)
    assert "List-Unsubscribe" not in msg
    tracked = [u for u in links(html_of(msg))
               if u.startswith(track.base + "/c/")]
    assert len(tracked) == 3
    status, headers, _ = track.get(urllib.parse.urlsplit(tracked[0]).path)
    assert status == 302 and headers["location"] == ORIGINALS[0]
    (ev,) = track.events("clicked")
    assert ev["qid"] == qid and ev["recipient"] is None


def tracked_message(track):
    """One tracked message of list news to alice: (qid, click paths, open
    path, unsubscribe path)."""
    html_part = "Content-Type: text/html\n\n" + HTML
    qid = smtp_queue(track.inst, "shop@%s" % track.origin, ["alice@rcpt.test"],
                     message(track.origin, html_part,
                             "X-Sluice-Track: opens, clicks\r\n"
                             "X-Sluice-List: news\r\n"))
    msg = parse(track.sink.wait_messages(1)[0])
    html = html_of(msg)
    clicks = [urllib.parse.urlsplit(u).path for u in links(html)
              if u.startswith(track.base + "/c/")]
    opened = re.search(r'<img src="%s(/o/[a-z2-7]+)"' % re.escape(track.base),
                       html).group(1)
    unsub = re.search(r"/u/[a-z2-7]+", msg["List-Unsubscribe"]).group(0)
    return qid, clicks, opened, unsub


ONE_CLICK = {"body": b"List-Unsubscribe=One-Click",
             "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


def test_good_tokens_are_never_rate_limited(make_instance, make_sink):
    """tracking_rate_limit = 3 and a client sending junk tokens until it
    gets 429: a real click still gets its 302 redirect and a real
    One-Click POST its 200 (the limit bounds bad tokens only, checked
    after the token), each with its event."""
    track = Track(make_instance, make_sink, tracking_rate_limit="3")
    qid, clicks, _, unsub = tracked_message(track)
    for _ in range(100):
        status = track.get("/c/" + "a" * 60)[0]
        assert status in (404, 429)
        if status == 429:
            break
    assert status == 429
    status, headers, _ = track.get(clicks[0])
    assert status == 302 and headers["location"] == ORIGINALS[0]
    status, _, _ = request(track.port, "POST", unsub, **ONE_CLICK)
    assert status == 200
    assert [e["qid"] for e in track.events("clicked")] == [qid]
    assert [e["qid"] for e in track.events("unsubscribed")] == [qid]


def test_repeated_unsubscribe_post_same_event_id(make_instance, make_sink):
    """The same One-Click POST twice (a client retrying) records two
    unsubscribed events with the same id, so consumers can drop the
    repeat; two opens of the same pixel are two opens, with two ids."""
    track = Track(make_instance, make_sink)
    qid, _, opened, unsub = tracked_message(track)
    for _ in range(2):
        assert request(track.port, "POST", unsub, **ONE_CLICK)[0] == 200
        assert track.get(opened)[0] == 200
    first, second = track.events("unsubscribed")
    assert first["id"] == second["id"] and first["qid"] == qid
    a, b = track.events("opened")
    assert a["id"] != b["id"]


def test_open_burst_shares_fdatasync_answers_after_it(make_instance, make_sink,
                                                      tmp_path):
    """Twenty opens sent at once (the api traced with strace): each is
    answered 200 with its opened event in the journal, and no answer is
    written before an fdatasync of the journal returned, yet the api made
    fewer fdatasyncs than requests: the events went in batches rather than
    one sync each on the loop that message submissions share."""
    import threading
    from test_durability import (READS, WRITES, Tracer, _done,
                                 _strace_usable, _strings, parse_trace)
    _strace_usable()
    track = Track(make_instance, make_sink)
    _, _, opened, _ = tracked_message(track)
    tracer = Tracer(track.inst.child("api"), tmp_path / "api.trace",
                    tmp_path / "api.err")
    count = 20
    statuses = []
    try:
        tracer.wait_attached()
        assert track.get("/v1/health")[0] == 200
        wait_until(lambda: "HTTP/1.1 200 OK" in tracer.text(), 10,
                   what="the health answer in the api's trace")
        barrier = threading.Barrier(count)

        def one():
            barrier.wait(30)
            statuses.append(track.get(opened)[0])
        threads = [threading.Thread(target=one) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # Every answer's write complete in the trace (its result written
        # too: a line strace has begun but not ended is no call yet).
        wait_until(lambda: len([
            e for e in parse_trace(tracer.text()) if e.name in WRITES and
            any("image/gif" in s for s in _strings(e))]) >= count, 10,
            what="every answer in the api's trace")
    finally:
        tracer.stop()
    assert statuses == [200] * count
    assert len(track.events("opened")) == count
    calls = parse_trace(tracer.text())
    answers = [e for e in calls if e.name in WRITES and
               any("image/gif" in s for s in _strings(e))]
    syncs = [e for e in calls if e.name == "fdatasync" and e.ret == "0"]
    assert len(answers) == count
    for ans in answers:
        (asked,) = [e for e in calls[:ans.index] if e.name in READS and
                    e.fd == ans.fd and
                    any("GET /o/" in s for s in _strings(e))][-1:]
        assert any(asked.index < e.index and _done(e) <= ans.ts
                   for e in syncs), "an answer before its event was synced"
    assert len(syncs) < count, "%d fdatasyncs for %d opens" % (len(syncs),
                                                                count)
