"""Forwarding to PACS: a durable outbox, routing by header and spacing verdict, retries.

* :mod:`scp.services.forwarding.routing` decides which ``[[destinations]]`` an instance goes to;
* :mod:`storage.outbox` keeps the jobs (created in the transaction that indexes the
  instance, so an instance answered Success always has its jobs);
* :mod:`scp.services.forwarding.worker` sends them, one worker thread per destination;
* :mod:`scp.api.forwarding` and :mod:`scp.cli.forward` show and steer the queue.
"""

from __future__ import annotations

from scp.services.forwarding.worker import DestinationWorker, Forwarder, WorkerSettings

__all__ = ["DestinationWorker", "Forwarder", "WorkerSettings"]
