"""test_api_tls - the HTTP API over TLS (api_tls = yes, #21)

The api listener speaks HTTPS with smtpd's certificate settings
(smtpd_tls_chain_files): Python's http.client verifies the chain of a
test CA and the name, sends a message that arrives at the sink; a plain
HTTP request on the same port gets no HTTP answer; a certificate that
cannot be read keeps the api from serving at all (never plain HTTP).
"""

import http.client
import json
import shutil
import ssl
import tempfile

import pytest

from conftest import LIBEXEC, SLUICE, free_port, require, wait_until
from tlsca import make_ca

GOOD = {"from": "a@sender.test", "to": ["b@rcpt.test"], "subject": "over tls",
        "text": "t"}


@pytest.fixture(scope="module")
def ca():
    folder = tempfile.mkdtemp(prefix="sluice-tlsca-", dir="/tmp")
    ca = make_ca(folder)
    ca.api = ca.issue("api.test")
    yield ca
    shutil.rmtree(folder, ignore_errors=True)


def https(port, ca, method, path, body=None, key=None):
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    hdrs = {"Content-Type": "application/json"}
    if key:
        hdrs["Authorization"] = "Bearer " + key
    try:
        conn.request(method, path, body=json.dumps(body).encode() if body else None,
                     headers=hdrs)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_api_over_tls(make_instance, make_sink, ca):
    require(LIBEXEC / "api", SLUICE)
    sink = make_sink()
    port = free_port()
    inst = make_instance(relayhost="[127.0.0.1]:%d" % sink.port,
                         params={"api_listen": "127.0.0.1:%d" % port,
                                 "api_tls": "yes",
                                 "smtpd_tls_chain_files": str(ca.api.chain)})
    key = inst.check("api", "key", "create", "acme").strip()
    inst.start()

    def healthy():
        try:
            return https(port, ca, "GET", "/v1/health")[0] == 200
        except (OSError, ssl.SSLError):
            return False
    wait_until(healthy, 10, what="the api to answer over TLS")
    status, answer = https(port, ca, "POST", "/v1/messages", GOOD, key=key)
    assert status == 202, answer
    assert sink.wait_messages(1)[0].rcpt_tos == ["b@rcpt.test"]
    # Plain HTTP on the TLS port: no HTTP answer.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v1/health")
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.getresponse().read()
    finally:
        conn.close()
    assert https(port, ca, "GET", "/v1/health")[0] == 200


def test_unreadable_certificate_serves_nothing(make_instance):
    """api_tls = yes with a chain file that does not exist: the api says
    why in the log and never answers plain HTTP on the port."""
    require(LIBEXEC / "api", SLUICE)
    port = free_port()
    inst = make_instance(params={"api_listen": "127.0.0.1:%d" % port,
                                 "api_tls": "yes",
                                 "smtpd_tls_chain_files": "/nonexistent/chain.pem"})
    inst.start()
    inst.wait_log(r"api_tls = yes: .*nonexistent", timeout=20)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/v1/health")
            conn.getresponse().read()
    finally:
        conn.close()
