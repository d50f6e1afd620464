"""test_reputation_check - sluice check and the parameters of the reputation
circuit breaker and warm-up schedules (issue 18, items 3 and 4)

qmgr does not use them yet (a later step wires global/reputation.c and
global/warmup.c in); what is checked here is that a malformed warm-up line
or reputation value is refused by `sluice check` with the line or the
parameter named, and that good ones pass.
"""


def test_check_refuses_a_malformed_warmup_line(make_instance, tmp_path):
    """sluice check names the file and the line of a bad warm-up schedule."""
    inst = make_instance()
    table = tmp_path / "warmup"
    table.write_text("# new sources\n"
                     "127.0.0.3 start=2026-12-01 caps=50,100,200 gmail=20,40\n"
                     "127.0.0.4 start=2026-02-30 caps=50\n")
    inst.conf_set(smtp_source_warmup_maps="texthash:%s" % table)
    r = inst.command("check")
    assert r.returncode == 1
    assert ("smtp_source_warmup_maps: %s, line 3: start=2026-02-30: not a "
            "date YYYY-MM-DD" % table) in r.stderr, r.stderr
    table.write_text("127.0.0.3 start=2026-12-01 caps=50,100,200\n"
                     "127.0.0.3 start=2026-12-02 caps=5\n")
    r = inst.command("check")
    assert r.returncode == 1
    assert "line 2: 127.0.0.3 given again (first on line 1)" in r.stderr
    table.write_text("127.0.0.3 start=2026-12-01 caps=50,100,200 gmail=20\n"
                     "::1 start=2026-12-05 caps=10,20\n")
    r = inst.command("check")
    assert "smtp_source_warmup_maps" not in r.stderr, r.stderr


def test_check_refuses_a_bad_ratio(make_instance):
    """A ratio that is no ratio, or a probe rate that is no rate, is named."""
    inst = make_instance()
    r = inst.command("check")
    assert "reputation_" not in r.stderr, r.stderr
    inst.conf_set(reputation_block_ratio="150%")
    r = inst.command("check")
    assert r.returncode == 1
    assert "reputation_block_ratio = \"150%\": not a ratio" in r.stderr
    inst.conf_set(reputation_block_ratio="2.5%",
                  reputation_probe_rate="1/week")
    r = inst.command("check")
    assert r.returncode == 1
    assert "reputation_probe_rate = " in r.stderr, r.stderr
    assert "reputation_block_ratio" not in r.stderr, r.stderr
