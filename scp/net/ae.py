"""The node's pynetdicom Application Entity: its settings and presentation contexts.

One AE per process (:func:`build_ae`), accepting (PS3.8 9.3.3.2, as SCP):

* Verification (PS3.4 A) in the four uncompressed transfer syntaxes;
* Study Root and Patient Root Query/Retrieve - FIND (PS3.4 C.6.1, C.6.2), answered by
  :mod:`scp.services.find`, with SOP Class Extended Negotiation of relational queries;
* Study Root and Patient Root Query/Retrieve - MOVE and GET (PS3.4 C.6.1, C.6.2),
  answered by :mod:`scp.services.retrieve` (C-GET also as the C-STORE SCU, SCP/SCU Role
  Selection: the requester is the Storage SCP);
* Storage Commitment Push Model (PS3.4 J), answered by :mod:`scp.services.commitment`;
* every storage SOP class pynetdicom knows (PS3.4 B.5) in every transfer syntax of
  :data:`ACCEPTED_TRANSFER_SYNTAXES`, accepted as sent (no transcoding).

:func:`configure_pynetdicom` sets the process-wide switches before the first association.
"""

from __future__ import annotations

import tempfile

from pydicom import config as pydicom_config
from pydicom import uid as pyuid
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from scp.config import Config
from scp.net import compat
from scp.net.handlers import received_file_meta
from scp.net.policy import AssociationPolicy
from scp.services.ingest import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

#: Transfer syntaxes accepted as sent (PS3.5 Annex A); no transcoding.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    pyuid.ExplicitVRLittleEndian,
    pyuid.ImplicitVRLittleEndian,
    pyuid.DeflatedExplicitVRLittleEndian,
    pyuid.ExplicitVRBigEndian,
    pyuid.JPEGBaseline8Bit,
    pyuid.JPEGExtended12Bit,
    pyuid.JPEGLossless,
    pyuid.JPEGLosslessSV1,
    pyuid.JPEGLSLossless,
    pyuid.JPEGLSNearLossless,
    pyuid.JPEG2000Lossless,
    pyuid.JPEG2000,
    pyuid.JPEG2000MCLossless,
    pyuid.JPEG2000MC,
    pyuid.HTJ2KLossless,
    pyuid.HTJ2KLosslessRPCL,
    pyuid.HTJ2K,
    pyuid.RLELossless,
    pyuid.MPEG2MPML,
    pyuid.MPEG2MPHL,
    pyuid.MPEG4HP41,
    pyuid.MPEG4HP41BD,
    pyuid.HEVCMP51,
    pyuid.HEVCM10P51,
)


def configure_pynetdicom(cfg: Config, tmp_dir: str) -> None:
    """Process-wide pynetdicom settings (one node per process)."""
    # Receive each data set straight to a file (PS3.8 fragments appended as they come);
    # the handler gets event.dataset_path.  The temporary file lives in the store's tmp/
    # folder, on the same filesystem as the store.
    compat.receive_data_sets_to_files()
    # ...with the stored file's File Meta already, so that the ingest renames the received
    # file into place (one write of the data set, not two) ...
    compat.write_received_file_meta(received_file_meta)
    # ... and each UID of a DIMSE primitive validated once, not again for the response.
    compat.remember_valid_uids()
    # A disk filling up while a data set arrives gets 0xA700, not an A-ABORT.
    compat.hold_back_write_errors()
    # C-GET/C-MOVE sub-operations stream the stored files (scp.net.retrieve).
    compat.send_data_sets_from_files()
    compat.resolve_stored_sends()
    compat.bound_send_queue()  # a file sent by path stays on disk, not in the queue
    compat.cap_send_pdu()  # and goes out in bounded PDUs, also to "no limit" peers
    compat.accept_unknown_storage(cfg.node.accept_unknown_sop_classes)
    tempfile.tempdir = tmp_dir
    # Lenient on read: pydicom's check of every value read against its VR (a regex per
    # UID, also for each DIMSE primitive pynetdicom builds) only ever warned, into no log
    # anyone reads, and took ~8 % of the CPU per instance. The rules that matter are the
    # pipeline's (scp/pipeline/validate.py), with findings; what the node writes is still
    # checked against its VR (scp/pipeline/record.py). Set once, before any association.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


def build_ae(cfg: Config) -> AE:
    """The node's AE: ``[node]`` title, timeouts (seconds), maximum PDU (bytes) and
    association count, the ``[security]`` AE title checks, the contexts above."""
    ae = AE(ae_title=cfg.node.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = cfg.node.max_pdu_size
    ae.acse_timeout = cfg.node.acse_timeout
    ae.dimse_timeout = cfg.node.dimse_timeout
    ae.network_timeout = cfg.node.network_timeout
    ae.maximum_associations = cfg.node.max_associations
    # [security]: calling AE allow list and called AE check (PS3.8 9.3.4 reasons 3, 7).
    AssociationPolicy.from_config(cfg).apply(ae)
    ae.add_supported_context(Verification, list(ACCEPTED_TRANSFER_SYNTAXES[:4]))
    dimse = [pyuid.ExplicitVRLittleEndian, pyuid.ImplicitVRLittleEndian]
    # C-FIND, C-MOVE and C-GET SCP, Study Root and Patient Root (PS3.4 C.6.1, C.6.2).
    for model in (
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelGet,
    ):
        ae.add_supported_context(model, dimse)
    # Storage Commitment Push Model SCP (PS3.4 J.3); the SCU role too, so a requester
    # that proposes SCP/SCU Role Selection for its reports is answered (PS3.4 J.3.3).
    ae.add_supported_context(StorageCommitmentPushModel, dimse, scu_role=True, scp_role=True)
    for cx in StoragePresentationContexts:
        if cx.abstract_syntax is not None:
            # C-STORE SCP, and SCU on a C-GET's association when the requester offers
            # the SCP role (PS3.4 C.4.3, PS3.7 D.3.3.4).
            ae.add_supported_context(
                cx.abstract_syntax,
                list(ACCEPTED_TRANSFER_SYNTAXES),
                scu_role=True,
                scp_role=True,
            )
    return ae
