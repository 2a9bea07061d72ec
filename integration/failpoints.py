"""Failpoints: named places where a process can be told to stop for a while, so that a test (or an
operator rehearsing a recovery) can kill it exactly there. Off unless MARROWLINK_FAILPOINTS names them:

    MARROWLINK_FAILPOINTS="import.stored=30"   # pause 30 s after an import stored its instances

Places: ``import.stored`` (the WSI is stored, the job not yet marked done), ``analyse.stored`` (results
stored and the ORU queued, the job not yet marked done).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("marrowlink.failpoints")

VARIABLE = "MARROWLINK_FAILPOINTS"


def pause(name: str) -> None:
    """Sleep here if MARROWLINK_FAILPOINTS names this place."""
    for item in os.environ.get(VARIABLE, "").split(","):
        place, _, seconds = item.strip().partition("=")
        if place == name:
            log.warning("failpoint %s: pausing %s s (%s)", name, seconds or "10", VARIABLE)
            time.sleep(float(seconds or 10))
