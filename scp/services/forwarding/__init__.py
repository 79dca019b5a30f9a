"""Forwarding to PACS: a durable outbox, routing by header and spacing verdict, retries.

* :mod:`scp.services.forwarding.routing` decides which ``[[destinations]]`` an instance goes to;
* :mod:`storage.outbox` keeps the jobs (created in the transaction that indexes the
  instance, so an instance answered Success always has its jobs);
* :mod:`scp.services.forwarding.forwarder` queues them at ingest and runs the workers;
* :mod:`scp.services.forwarding.worker` sends them, one worker thread per destination,
  with the presentation contexts of :mod:`scp.services.forwarding.contexts`, through the
  Storage SCU interface of :mod:`scp.services.forwarding.sender` (implemented by
  :mod:`scp.net.scu`, wired in by :mod:`scp.node`);
* :mod:`scp.api.forwarding` and :mod:`scp.cli.forward` show and steer the queue.
"""

from __future__ import annotations

from scp.services.forwarding.forwarder import Forwarder
from scp.services.forwarding.sender import AssociationOpener, OpenerFactory, StoreAssociation
from scp.services.forwarding.worker import DestinationWorker, WorkerSettings

__all__ = [
    "AssociationOpener",
    "DestinationWorker",
    "Forwarder",
    "OpenerFactory",
    "StoreAssociation",
    "WorkerSettings",
]
