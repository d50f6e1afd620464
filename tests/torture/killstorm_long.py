"""killstorm_long - the kill storm of tests/test_killstorm.py, long
(issue 6, item 2; issue "Hardening", items 6 and 7; `make torture`)

KILLSTORM_LONG_MESSAGES messages (default 3000) flow for
KILLSTORM_LONG_SECONDS (default: messages / 100) while one random daemon
of any age (smtpd, cleanup, qmgr, smtp, pickup, bounce, local) is
SIGKILLed every 0.3 s (KILLSTORM_INTERVAL); then master and every child
are killed at once and started again. At least 99.7% of the messages must
be acknowledged (a refused attempt is sent again), nothing acknowledged
may be lost, and for each acknowledged message that did not arrive the
run says where it is or that it is gone; duplicates are printed.

Run: /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/torture/killstorm_long.py
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_killstorm import run_storm   # noqa: E402

MESSAGES = int(os.environ.get("KILLSTORM_LONG_MESSAGES", "3000"))
SECONDS = os.environ.get("KILLSTORM_LONG_SECONDS")


def test_kill_storm_long(make_instance, make_sink):
    run_storm(make_instance, make_sink, MESSAGES,
              send_seconds=float(SECONDS) if SECONDS else None,
              min_accepted=0.997)
