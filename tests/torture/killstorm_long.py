"""killstorm_long - the kill storm of tests/test_killstorm.py, long
(issue 6, item 2; `make torture`)

KILLSTORM_LONG_MESSAGES messages (default 20000) flow for
KILLSTORM_LONG_SECONDS (default: messages / 100) while random daemons are
SIGKILLed every 200-400 ms; then master and every child are killed at once
and started again. Nothing acknowledged may be lost; duplicates are printed.

Run: /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/torture/killstorm_long.py
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_killstorm import run_storm   # noqa: E402

MESSAGES = int(os.environ.get("KILLSTORM_LONG_MESSAGES", "20000"))
SECONDS = os.environ.get("KILLSTORM_LONG_SECONDS")


def test_kill_storm_long(make_instance, make_sink):
    run_storm(make_instance, make_sink, MESSAGES,
              send_seconds=float(SECONDS) if SECONDS else None)
