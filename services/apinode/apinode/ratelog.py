"""A warning logged at most once per interval, with how many were held back: outages must not flood the log."""

from __future__ import annotations

import logging
import time


class RateLimitedWarning:
    """Logs ``what: reason`` at most every ``every`` seconds."""

    def __init__(self, logger: logging.Logger, every: float = 5.0) -> None:
        self._log, self._every = logger, every
        self._at = float("-inf")
        self._held = 0

    def __call__(self, what: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._at < self._every:
            self._held += 1
            return
        held = f" ({self._held} more since the last report)" if self._held else ""
        self._log.warning("%s: %s%s", what, reason, held)
        self._at, self._held = now, 0
