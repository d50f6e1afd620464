"""test_check_leftovers - what `sluice check` missed until now

- events_webhook_routes: a malformed entry is an error naming the entry
  and why (the events daemon refuses to run with it: the same parser,
  events_export_route_parse); a kind:KIND that no event has is a warning.
- smtp_source_pool_allow_maps: an entry naming a pool that
  smtp_source_pools does not have, or a key that is never looked up, is a
  warning naming the file and line (a typo there silently refuses the pool
  to the tenant it was meant for). A warning, not an error: nothing fails
  at run time, and an entry may be written before its pool is made.
- metrics_listen (or api_listen, or an exporter) while master.cf runs no
  such service: a warning from `sluice check` and from master at start.
"""

from conftest import LIBEXEC, one_line, require, wait_until


def errors(r):
    return [l for l in one_line(r.stderr) if l.startswith("sluice: error:")]


def warnings(r, word):
    return [l for l in one_line(r.stderr)
            if l.startswith("sluice: warning:") and word in l]


def test_check_names_bad_webhook_routes(make_instance):
    """Each malformed route is an error with its text and reason, exit 1;
    `sluice events status` refuses the same value (one parser); good
    routes pass, an unknown kind is only a warning."""
    inst = make_instance()
    bad = ["kind:bounced=ftp://127.0.0.1:9/x",       # not http(s)
           "kinds:bounced=http://127.0.0.1:9/x",     # not kind: or tenant:
           "kind:bounced+=http://127.0.0.1:9/x",     # empty term
           "http://127.0.0.1:9/x"]                   # no selector
    good = "kind:bounced+tenant:acme=http://127.0.0.1:9/a"
    inst.conf_set(events_webhook_routes=" ".join([good] + bad))
    r = inst.command("check")
    assert r.returncode == 1, r.stderr
    errs = errors(r)
    for entry, why in zip(bad, ["the URL is not http:// or https://",
                                "\"kinds:bounced\" is not kind:KIND",
                                "an empty term after \"+\"",
                                "not SELECTOR=URL"]):
        assert any("events_webhook_routes: \"%s\": %s" % (entry, why) in l
                   and "main.cf line " in l for l in errs), (entry, errs)
    assert not any(good in l for l in one_line(r.stderr)), r.stderr
    assert len(errs) == len(bad), errs
    # the events daemon's own parser says the first one the same way
    s = inst.command("events", "status")
    assert s.returncode != 0
    assert "events_webhook_routes: \"%s\"" % bad[0] in s.stderr, s.stderr

    inst.conf_set(events_webhook_routes=good +
                  " kind:bouncd=http://127.0.0.1:9/b")
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert errors(r) == []
    assert warnings(r, "events_webhook_routes") == [
        "sluice: warning: %s line %s: events_webhook_routes: "
        "\"kind:bouncd=http://127.0.0.1:9/b\": no event is of kind "
        "\"bouncd\" (the route picks nothing)" % (
            inst.main_cf, main_cf_line(inst, "events_webhook_routes"))]

    inst.conf_set(events_webhook_routes=good)
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert "events_webhook_routes" not in r.stderr, r.stderr


def main_cf_line(inst, name):
    for n, line in enumerate(inst.main_cf.read_text().splitlines(), 1):
        if line.split("=")[0].strip() == name:
            return n
    raise AssertionError("%s not in main.cf" % name)


def test_check_flags_allow_list_naming_unknown_pools(make_instance, tmp_path):
    """A pool the allow-list names that smtp_source_pools lacks (a typo)
    and a key that is never looked up are warnings with file and line;
    "*" and existing pools (any case) are fine. With no pool table at
    all, every named pool is unknown."""
    inst = make_instance()
    pools = tmp_path / "pools"
    pools.write_text("shared 127.0.0.1\nacme 127.0.0.1\n")
    allow = tmp_path / "allow"
    allow.write_text("tenant:acme     acme, sharred\n"
                     "sasl:bob@x.test ACME shared\n"
                     "mynetworks      *\n"
                     "tenants:globex  shared\n")
    inst.conf_set(smtp_source_pools="texthash:%s" % pools,
                  smtp_source_pool_allow_maps="texthash:%s" % allow)
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    got = warnings(r, "smtp_source_pool_allow_maps")
    assert got == [
        "sluice: warning: smtp_source_pool_allow_maps: %s line 1: "
        "tenant:acme: no pool \"sharred\" in smtp_source_pools "
        "(tenant:acme naming it is refused)" % allow,
        "sluice: warning: smtp_source_pool_allow_maps: %s line 4: key "
        "\"tenants:globex\" is never looked up (sasl:USER, tenant:TENANT, "
        "mynetworks or local)" % allow], r.stderr

    # a hash table's source file is read too
    allow.write_text("tenant:acme acme shared\n")
    require_postmap = inst.command("map", "hash:%s" % allow)
    assert require_postmap.returncode == 0, require_postmap.stderr
    inst.conf_set(smtp_source_pool_allow_maps="hash:%s" % allow)
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert "smtp_source_pool_allow_maps" not in r.stderr, r.stderr

    # no pools at all: the allow-list names nothing that exists
    inst.conf_set(smtp_source_pools="")
    r = inst.command("check")
    assert len(warnings(r, "no pool \"")) == 2, r.stderr


def test_metrics_listen_without_metrics_service(make_instance):
    """metrics_listen set while master.cf has no metrics service: `sluice
    check` and master at start both warn that nothing serves /metrics and
    no journal segment is removed; with the service, neither does."""
    require(LIBEXEC / "metrics")
    inst = make_instance()
    inst.conf_set(metrics_listen="127.0.0.1:9")
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert warnings(r, "metrics") == []
    inst.remove_service("metrics")
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    want = ("metrics_listen = 127.0.0.1:9, but master.cf runs no metrics "
            "service: nothing serves GET /metrics, and the events daemon "
            "removes no journal segment")
    assert len(warnings(r, want)) == 1, r.stderr
    inst.start()
    wait_until(lambda: want in inst.log(), 10,
               what="master's warning about the metrics service")


def test_exporters_and_api_without_their_services(make_instance):
    """An events exporter (here the default index and suppression feed)
    without the events service, and api_listen without the api service,
    are warnings of `sluice check`."""
    inst = make_instance()
    inst.conf_set(api_listen="127.0.0.1:9")
    r = inst.command("check")
    assert warnings(r, "master.cf runs no") == [], r.stderr
    inst.remove_service("events")
    inst.remove_service("api")
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    assert len(warnings(r, "api_listen = 127.0.0.1:9, but master.cf runs no "
                           "api service")) == 1, r.stderr
    assert len(warnings(r, "master.cf runs no events service: no event "
                           "reaches the exporters")) == 1, r.stderr
    inst.conf_set(events_enable="no", api_listen="")
    r = inst.command("check")
    assert warnings(r, "master.cf runs no") == [], r.stderr


def test_check_tracking_urls_and_tables(make_instance, tmp_path):
    """cleanup will not start with a tracking_base_url or
    unsubscribe_base_url that is not http(s): `sluice check` says so (exit
    1); dkim_signing_maps and track_tenant_maps are opened like the other
    tables (a missing .db: a warning that says to run sluice map)."""
    inst = make_instance()
    inst.conf_set(tracking_base_url="ftp://t.example.test/",
                  unsubscribe_base_url="t.example.test")
    r = inst.command("check")
    assert r.returncode == 1, r.stderr
    errs = errors(r)
    assert len(errs) == 2, errs
    assert "tracking_base_url = ftp://t.example.test/: not an http or " \
        "https URL (cleanup will not start)" in errs[0], errs
    assert "main.cf line " in errs[0], errs
    assert "unsubscribe_base_url = t.example.test: not an http" in errs[1]
    inst.conf_set(tracking_base_url="https://t.example.test/",
                  unsubscribe_base_url="",
                  dkim_signing_maps="hash:%s" % (tmp_path / "dkim"),
                  track_tenant_maps="hash:%s" % (tmp_path / "track"))
    r = inst.command("check")
    assert r.returncode == 0, r.stderr
    for param, name in (("dkim_signing_maps", "dkim"),
                        ("track_tenant_maps", "track")):
        assert len(warnings(r, "%s: hash:%s" % (param, tmp_path / name))) \
            == 1, r.stderr


def test_check_smtpd_tls_level_unknown(make_instance):
    """smtpd refuses to start with a smtpd_tls_security_level it does not
    know: `sluice check` says so (exit 1) rather than loading certificates
    for it as if it were encrypt."""
    inst = make_instance()
    inst.conf_set(smtpd_tls_security_level="encrpyt")
    r = inst.command("check")
    assert r.returncode == 1, r.stderr
    assert errors(r) == [
        "sluice: error: smtpd_tls_security_level: unknown level \"encrpyt\" "
        "(none, may or encrypt; smtpd will not start)"], r.stderr
    inst.conf_set(smtpd_tls_security_level="none")
    r = inst.command("check")
    assert errors(r) == [], r.stderr


def test_check_webhook_secret_file(make_instance, tmp_path):
    """With a webhook configured, a secret file that cannot be read, whose
    first line is empty, or set beside events_webhook_secret keeps the
    events daemon from running: each is an error of `sluice check`."""
    inst = make_instance()
    secret = tmp_path / "secret"
    inst.conf_set(events_webhook_secret_file=str(secret))
    r = inst.command("check")
    assert errors(r) == [], "no webhook: the file is not read: " + r.stderr
    inst.conf_set(events_webhook_urls="http://127.0.0.1:9/hook")
    r = inst.command("check")
    assert r.returncode == 1, r.stderr
    assert errors(r) == [
        "sluice: error: events_webhook_secret_file: cannot read %s: No such "
        "file or directory (the events daemon will not run)" % secret]
    secret.write_text("\nsecond line\n")
    r = inst.command("check")
    assert errors(r) == [
        "sluice: error: events_webhook_secret_file: %s: the first line is "
        "empty (the events daemon will not run)" % secret], r.stderr
    secret.write_text("s3cret\n")
    r = inst.command("check")
    assert r.returncode == 0 and errors(r) == [], r.stderr
    inst.conf_set(events_webhook_secret="other")
    r = inst.command("check")
    assert r.returncode == 1
    assert "set events_webhook_secret or events_webhook_secret_file, not " \
        "both" in r.stderr, r.stderr
