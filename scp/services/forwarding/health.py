"""A destination's health as its worker sees it, and the one log line per change.

States: ``up`` (the last association was established and answered), ``down`` (no
association, a timeout or an abort: a failure of reach), ``refusing`` (it answers,
with failure statuses).  A worker logs when the state changes, with counts, instead
of one line per job and attempt:

* ``down``: WARNING ``forward pacs: destination down (<why>); 120 jobs waiting;
  probing every <= 30 s``;
* back ``up`` from ``down``: INFO ``forward pacs: destination up again after 95.2 s
  down (7 failed attempts); 120 jobs waiting, sending them now``;
* ``refusing`` / accepting again: WARNING / INFO with the status and the count of
  refusals.

While ``down``, the worker tries one job per probe (:meth:`DestinationHealth.
probe_delay_s`: the exponential backoff of the destination, capped at the
``probe_interval_s`` of ``[forwarding]``); when a probe associates again, every
waiting job is made due at once (:func:`storage.outbox.retry`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from scp.metrics import METRICS
from storage.outbox import backoff_s

log = logging.getLogger("spacing_scp.forward")

UP = "up"
DOWN = "down"
REFUSING = "refusing"


class DestinationHealth:
    """Tracks one destination's state; ``waiting()`` counts its undelivered jobs (for
    the log lines only, so it is called on changes, never per job)."""

    def __init__(
        self,
        name: str,
        *,
        retry_initial_s: float,
        probe_interval_s: float,
        waiting: Callable[[], int],
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.state = UP
        self.retry_initial_s = retry_initial_s
        self.probe_interval_s = probe_interval_s
        self._waiting = waiting
        self._rng = rng or random.Random()
        #: Consecutive failures of reach; reset by any answer.
        self.failures = 0
        #: Refusals since the destination began refusing; reset by a stored instance.
        self.refusals = 0
        self._since = time.monotonic()
        self.next_probe = 0.0
        self._report()

    def _report(self) -> None:
        """``spacing_scp_forward_destination_down`` of this destination, from :attr:`down`."""
        METRICS.set(
            "spacing_scp_forward_destination_down", 1.0 if self.down else 0.0, destination=self.name
        )

    @property
    def down(self) -> bool:
        return self.state == DOWN

    def probe_delay_s(self) -> float:
        """Seconds until the next probe: backoff over the consecutive failures, at most
        ``probe_interval_s``."""
        return backoff_s(self.failures, self.retry_initial_s, self.probe_interval_s, self._rng)

    def _count(self) -> str:
        try:
            return str(self._waiting())
        except Exception:  # the database may be what is failing
            return "?"

    def unreachable(self, error: str) -> float:
        """A failure of reach; returns the pause in seconds before the next probe."""
        self.failures += 1
        pause = self.probe_delay_s()
        self.next_probe = time.monotonic() + pause
        if self.state != DOWN:
            self.state = DOWN
            self._since = time.monotonic()
            self._report()
            log.warning(
                "forward %s: destination down (%s); %s jobs waiting; probing every <= %g s",
                self.name,
                error,
                self._count(),
                self.probe_interval_s,
            )
        return pause

    def answered(self) -> bool:
        """An association was established; ``True`` if the destination was down (the
        caller then makes the waiting jobs due at once)."""
        was_down = self.state == DOWN
        if was_down:
            log.info(
                "forward %s: destination up again after %.1f s down (%d failed attempts);"
                " %s jobs waiting, sending them now",
                self.name,
                time.monotonic() - self._since,
                self.failures,
                self._count(),
            )
            self.state = UP
            self._since = time.monotonic()
            self._report()
        self.failures = 0
        return was_down

    def refused(self, status: int, text: str) -> None:
        """The destination answered a failure status for an instance."""
        self.failures = 0
        self.refusals += 1
        if self.state != REFUSING:
            self.state = REFUSING
            self._since = time.monotonic()
            self._report()
            log.warning(
                "forward %s: destination refuses instances (%s); each is retried with"
                " backoff, up to its max_attempts",
                self.name,
                text,
            )

    def stored(self) -> None:
        """The destination stored an instance (Success or a warning)."""
        self.failures = 0
        if self.state == REFUSING:
            log.info(
                "forward %s: destination stores instances again (%d refused before)",
                self.name,
                self.refusals,
            )
        self.state = UP
        self.refusals = 0
        self._report()
