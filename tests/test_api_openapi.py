"""test_api_openapi - conf/openapi.yaml against the api daemon (#21)

The OpenAPI 3 description is parsed with PyYAML and compared with the
implementation: the paths are those api/api.c's router serves (its "/v1/"
literals), each documented method of a path is served by the running
daemon and every other method gets 405; every error code the document
lists (x-error-codes) is one the sources return with that status, every
code the sources return is documented, and real requests that provoke
errors get statuses and codes the document lists for that operation.
"""

import re

import yaml

from conftest import TOP
from test_api import Api, api_request, with_

DOC = TOP / "conf" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete")
SOURCES = [TOP / "api" / "api.c"] + sorted((TOP / "global").glob("api_*.c"))


def load():
    doc = yaml.safe_load(DOC.read_text())
    assert str(doc["openapi"]).startswith("3."), doc["openapi"]
    return doc


def resolve(doc, obj):
    while isinstance(obj, dict) and "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def documented(doc):
    """{(path, method): {status: set of codes}}"""
    ops = {}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            statuses = {}
            for status, resp in item[method]["responses"].items():
                resp = resolve(doc, resp)
                statuses[int(status)] = set(resp.get("x-error-codes", []))
            ops[(path, method)] = statuses
    return ops


def source_pairs():
    """(status, code) pairs the C sources answer with."""
    text = "\n".join(p.read_text() for p in SOURCES)
    pairs = set(re.findall(r'\b([45]\d\d),\s*"([a-z_]+)"', text))
    # err.status = N; ... err.code = "x" (the code within a few lines)
    for m in re.finditer(r'status = ([45]\d\d);((?:.*\n){0,3}?).*?code = "([a-z_]+)"',
                         text):
        pairs.add((m.group(1), m.group(3)))
    # rc == -1 ? 413 : 422 ... rc == -1 ? "message_too_large" : "template_too_complex"
    for m in re.finditer(r'\? ([45]\d\d) : ([45]\d\d);\s*\n\s*\S+code =[^?]*\? "([a-z_]+)"\s*:\s*"([a-z_]+)"',
                         text):
        pairs.add((m.group(1), m.group(3)))
        pairs.add((m.group(2), m.group(4)))
    return {(int(s), c) for s, c in pairs}


def norm(path):
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_paths_are_the_routes_served():
    """The document's paths are exactly the router's: "/v1/x/" prefixes
    are "/v1/x/{param}"."""
    doc = load()
    src = (TOP / "api" / "api.c").read_text()
    router = src[src.index("static void api_request("):]
    router = router[:router.index("\n}\n")]
    served = set()
    for lit in re.findall(r'"(/v1/[a-z/]*)"', router):
        served.add(lit + "{}" if lit.endswith("/") else lit)
    assert served == {norm(p) for p in doc["paths"]}


def test_error_codes_are_those_returned():
    """Every documented (status, code) is one the sources return, and
    every code the sources return is documented with its status."""
    doc = load()
    pairs = source_pairs()
    listed = set()
    for statuses in documented(doc).values():
        for status, codes in statuses.items():
            listed |= {(status, c) for c in codes}
            if status >= 400:
                assert codes, "status %d has no x-error-codes" % status
    assert listed - pairs == set(), "documented but never returned"
    # 405 answers the methods the document does not list (checked against
    # the daemon below); the description says so.
    assert (405, "method_not_allowed") in pairs
    assert "405 method_not_allowed" in doc["info"]["description"]
    assert {p for p in pairs if p[1] != ""} - listed == \
        {(405, "method_not_allowed")}, "returned but not documented"


def test_methods_and_errors_against_the_daemon(make_instance, make_sink):
    """The running daemon serves each documented method of each path
    (no 404 "no such endpoint", no 405) and answers 405 to the others;
    requests that go wrong get a status and code the document lists."""
    doc = load()
    ops = documented(doc)
    api = Api(make_instance, make_sink)
    admin = api.create_key("acme", "--scope", "send,read,templates,admin")
    reader = api.create_key("acme", "--scope", "read")
    concrete = {"/v1/messages": "/v1/messages",
                "/v1/messages/{id}": "/v1/messages/NOSUCHQUEUEID0001",
                "/v1/templates/{name}": "/v1/templates/welcome",
                "/v1/suppressions": "/v1/suppressions",
                "/v1/suppressions/{address}":
                    "/v1/suppressions/gone%40rcpt.test",
                "/v1/health": "/v1/health"}
    assert set(concrete) == set(doc["paths"])

    def check(path, method, status, answer):
        allowed = ops[(path, method)]
        assert status in allowed, (path, method, status, answer)
        if status >= 400:
            assert answer["error"]["code"] in allowed[status], \
                (path, method, status, answer)

    for path, url in concrete.items():
        for method in METHODS:
            body = {"subject": "s", "text": "t"} if method == "put" else \
                (with_() if method == "post" else None)
            status, answer, _ = api_request(api.port, method.upper(), url, body,
                                            key=admin)
            if (path, method) in ops:
                assert status != 405, (path, method, answer)
                if status == 404:
                    assert answer["error"]["message"] != "no such endpoint"
                check(path, method, status, answer)
            else:
                assert status == 405, (path, method, status, answer)
                assert answer["error"]["code"] == "method_not_allowed"
    # Errors of POST /v1/messages, each checked against the document.
    post = ("/v1/messages", "post")
    for body, key, raw in [
            (None, None, b"{}"),                         # no key: 401
            (with_(), reader, None),                     # no send scope: 403
            (None, admin, b"{not json"),                 # 400 invalid_json
            (with_(to="not an address"), admin, None),   # 422
            (with_(subject=None, text=None), admin, None),
            (with_(template="nope", subject=None, text=None), admin, None)]:
        status, answer, _ = api_request(api.port, "POST", "/v1/messages", body,
                                        key=key, raw_body=raw)
        assert status >= 400, answer
        check(*post, status, answer)
    status, answer, _ = api_request(api.port, "GET",
                                    "/v1/suppressions/not-an-address",
                                    key=admin)
    check("/v1/suppressions/{address}", "get", status, answer)
    status, answer, _ = api_request(api.port, "GET", "/v1/templates/.bad",
                                    key=admin)
    check("/v1/templates/{name}", "get", status, answer)
    status, answer, _ = api_request(api.port, "PUT", "/v1/templates/t2",
                                    {"text": "{{#open}}"}, key=admin)
    check("/v1/templates/{name}", "put", status, answer)
