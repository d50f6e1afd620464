"""test_pool_allow - who may name a source pool (issue 18, review finding 7)

Tenants acme and globex each have a dedicated pool (127.0.0.4, 127.0.0.5)
beside the shared one (127.0.0.2). smtp_source_pool_allow_maps says which
pools each tenant (API) and each SASL user (SMTP AUTH) may name. A real
instance relays to an aiosmtpd sink that records the peer address of each
session, which is the source smtp bound: that shows which pool a message
really left from. Before the allow-list, anyone authenticated could name
any pool, another tenant's dedicated one included.
"""

import base64
import os
import shutil
import smtplib
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import LIBEXEC, require
from test_api import Api

POOLS = """\
shared  127.0.0.2/shared.example.test
acme    127.0.0.4/acme.example.test
globex  127.0.0.5/globex.example.test
"""

ALLOW = """\
tenant:acme              acme, shared
tenant:globex            globex shared
sasl:alice@example.test  acme shared
sasl:bob@example.test    globex shared
"""

SASLPASSWD2 = "/usr/sbin/saslpasswd2"


def pool_params(tmp_path):
    pools = tmp_path / "pools"
    pools.write_text(POOLS)
    allow = tmp_path / "pool_allow"
    allow.write_text(ALLOW)
    return {"smtp_source_pools": "texthash:%s" % pools,
            "default_source_pool": "shared",
            "smtp_source_pool_allow_maps": "texthash:%s" % allow}


def message(**extra):
    body = {"from": "app@acme.test", "to": "user@rcpt.test",
            "subject": "hello", "text": "hi\n"}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def test_api_tenant_cannot_use_another_tenants_pool(make_instance, make_sink,
                                                    tmp_path):
    """Tenant acme names globex's pool: 403 forbidden with field "pool",
    for a single message and for a batch, and nothing is queued; its own
    pool is accepted and the message leaves from 127.0.0.4. A raw MIME
    message carrying X-Sluice-Pool: globex is queued but leaves from the
    default pool (cleanup checks the tenant too)."""
    api = Api(make_instance, make_sink, params=pool_params(tmp_path))
    status, answer, _ = api.post(message(pool="globex"))
    assert status == 403, answer
    assert answer["error"]["code"] == "forbidden"
    assert answer["error"]["field"] == "pool"
    assert "globex" in answer["error"]["message"]
    status, answer, _ = api.post(message(
        pool="globex", to=None,
        recipients=[{"to": "a@rcpt.test"}, {"to": "b@rcpt.test"}]))
    assert status == 403, answer
    assert answer["error"]["field"] == "pool"
    assert api.queued() == []
    api.inst.wait_log(r"api: key=\S+ tenant=acme: pool globex refused: "
                      r"smtp_source_pool_allow_maps \(tenant:acme\) allows "
                      r"only \"acme, shared\"")

    status, answer, _ = api.post(message(pool="acme"))
    assert status == 202, answer
    got = api.sink.wait_messages(1, timeout=30)
    assert got[0].peer[0] == "127.0.0.4"
    assert got[0].helo == "acme.example.test"

    raw = (b"From: app@acme.test\r\nTo: user@rcpt.test\r\n"
           b"X-Sluice-Pool: globex\r\nSubject: raw\r\n\r\nbody\r\n")
    status, answer, _ = api.post({"from": "app@acme.test",
                                  "to": "user@rcpt.test",
                                  "raw": base64.b64encode(raw).decode()})
    assert status == 202, answer
    got = api.sink.wait_messages(2, timeout=30)
    assert got[1].peer[0] == "127.0.0.2"
    assert b"x-sluice-pool" not in got[1].data.lower()
    api.inst.wait_log(r"X-Sluice-Pool: globex ignored \(client [^:]*: "
                      r"smtp_source_pool_allow_maps \(tenant:acme\) allows "
                      r"only")


def test_api_other_tenant_and_no_entry(make_instance, make_sink, tmp_path):
    """Tenant globex may use its own pool; a tenant with no entry in the
    allow-list may name no pool (403), not even the shared one."""
    api = Api(make_instance, make_sink, params=pool_params(tmp_path))
    globex = api.create_key("globex", "--scope", "send")
    initech = api.create_key("initech", "--scope", "send")
    status, answer, _ = api.post(message(pool="globex"), key=globex)
    assert status == 202, answer
    assert api.sink.wait_messages(1, timeout=30)[0].peer[0] == "127.0.0.5"
    status, answer, _ = api.post(message(pool="shared"), key=initech)
    assert status == 403, answer
    assert answer["error"]["field"] == "pool"
    api.inst.wait_log(r"tenant=initech: pool shared refused: tenant:initech "
                      r"is not in smtp_source_pool_allow_maps")


@pytest.fixture(scope="module")
def sasl_dir():
    """smtpd.conf and a sasldb2 with alice and bob @example.test."""
    if not os.path.exists(SASLPASSWD2):
        pytest.fail("saslpasswd2 missing: apt-get install sasl2-bin")
    folder = Path(tempfile.mkdtemp(prefix="sluice-sasl-", dir="/tmp"))
    os.chmod(folder, 0o755)
    db = folder / "sasldb2"
    (folder / "smtpd.conf").write_text(
        "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
        "sasldb_path: %s\nmech_list: PLAIN\n" % db)
    for user in ("alice", "bob"):
        r = subprocess.run([SASLPASSWD2, "-c", "-p", "-f", str(db), "-u",
                            "example.test", user], input="secret\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    os.chmod(db, 0o644)          # smtpd runs as nobody
    os.chmod(folder / "smtpd.conf", 0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_sasl_user_cannot_use_another_tenants_pool(make_instance, make_sink,
                                                   tmp_path, sasl_dir):
    """alice (acme's SASL user, client not in mynetworks) sends
    X-Sluice-Pool: globex: the header is removed, a warning logged, and
    the message leaves from the default pool; with X-Sluice-Pool: acme it
    leaves from acme's source. bob may use globex."""
    require(LIBEXEC / "smtpd", LIBEXEC / "smtp", LIBEXEC / "cleanup",
            LIBEXEC / "qmgr")
    sink = make_sink()
    params = pool_params(tmp_path)
    params.update({
        "mynetworks": "127.0.0.255/32",       # 127.0.0.1 not trusted
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_tls_security_level": "none",
        "smtpd_tls_auth_only": "no",
        "cyrus_sasl_config_path": str(sasl_dir),
        "smtpd_sasl_local_domain": "example.test",
        "transport_maps": "inline:{ dest.test=smtp:[127.0.0.1]:%d }"
                          % sink.port})
    inst = make_instance(params=params)
    inst.remove_service("local")
    inst.start()

    def send(user, pool, n):
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as smtp:
            smtp.ehlo("client.test")
            smtp.login(user, "secret")
            smtp.sendmail("%s@example.test" % user, ["r%d@dest.test" % n],
                          b"X-Sluice-Pool: %s\r\nSubject: m%d\r\n\r\nx\r\n"
                          % (pool.encode(), n))

    send("alice", "globex", 1)
    got = sink.wait_messages(1, timeout=30)
    assert got[0].peer[0] == "127.0.0.2"
    assert b"x-sluice-pool" not in got[0].data.lower()
    inst.wait_log(r"warning: \S+: X-Sluice-Pool: globex ignored \(client "
                  r"[^:]*: smtp_source_pool_allow_maps "
                  r"\(sasl:alice@example\.test\) allows only \"acme "
                  r"shared\"\) and removed: the message keeps pool shared")
    send("alice", "acme", 2)
    send("bob", "globex", 3)
    got = sink.wait_messages(3, timeout=30)
    by_rcpt = {m.rcpt_tos[0]: m.peer[0] for m in got}
    assert by_rcpt == {"r1@dest.test": "127.0.0.2",
                       "r2@dest.test": "127.0.0.4",
                       "r3@dest.test": "127.0.0.5"}
