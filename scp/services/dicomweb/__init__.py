"""DICOMweb services (PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store.

* :mod:`.qido` -- QIDO-RS requests as C-FIND identifiers (:mod:`scp.services.find`), the
  node's spacing extension parameters, answers in the DICOM JSON model;
* :mod:`.wado` -- instances, metadata and frames streamed from the stored files, and the
  ``Accept`` negotiation (406 for what cannot be served without transcoding);
* :mod:`.stow` -- STOW-RS parts through :class:`scp.services.ingest.Ingestor`, the very
  path of C-STORE, and the response's Referenced/Failed SOP Sequences;
* :mod:`.multipart` -- ``multipart/related`` bodies parsed part by part to files, and
  written part by part from files.

No HTTP framework here: :mod:`scp.api.dicomweb` maps these to routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scp.services.dicomweb.qido import QidoService
from scp.services.dicomweb.stow import StowService
from scp.services.dicomweb.wado import WadoService


@dataclass(frozen=True)
class DicomWeb:
    """What the DICOMweb routes need: the three services, the folder STOW-RS parts are
    written to (on the data directory's file system), the largest part accepted in bytes
    (0: no limit) and the most matches a search answers."""

    qido: QidoService
    wado: WadoService
    stow: StowService
    tmp_dir: Path
    max_part_bytes: int = 0
    max_results: int = 10000


__all__ = ["DicomWeb", "QidoService", "StowService", "WadoService"]
