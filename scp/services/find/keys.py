"""The keys the C-FIND SCP supports, per level of its two information models.

Patient Root Query/Retrieve Information Model - FIND (PS3.4 C.6.1), levels PATIENT,
STUDY, SERIES and IMAGE, and Study Root (PS3.4 C.6.2), levels STUDY, SERIES and IMAGE
(where the patient keys are keys of the STUDY level, Table C.6-5).  Each
:class:`KeyDef` says at which level a key lives, how its values match
(PS3.4 C.2.2.2) and where its value comes from: an attribute of the index entity of its
level (:class:`storage.models.Study`, ``Series``, ``Instance``), or a value computed per
batch of matches (counts, Modalities in Study, the spacing the node measured).

Pure data: pydicom's dictionary only, no SQL, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.tag import BaseTag, Tag

#: Study Root Query/Retrieve Information Model - FIND (PS3.4 C.6.2).
SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.2.2.1"
#: Patient Root Query/Retrieve Information Model - FIND (PS3.4 C.6.1).
PATIENT_ROOT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.2.1.1"

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
#: An information model (PS3.4 C.6): ``STUDY`` (Study Root) or ``PATIENT`` (Patient Root).
Model = Literal["STUDY", "PATIENT"]
#: The levels of every model, from top to bottom (PS3.4 C.6.1.1, C.6.2.1).
ALL_LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
#: The levels of the Study Root model from top to bottom (PS3.4 C.6.2.1).
LEVELS: tuple[Level, ...] = ("STUDY", "SERIES", "IMAGE")
#: The levels of each model (PS3.4 C.6.1.1, C.6.2.1).
MODEL_LEVELS: dict[Model, tuple[Level, ...]] = {"STUDY": LEVELS, "PATIENT": ALL_LEVELS}
#: Unique Key of each level (PS3.4 C.6.1.1, C.6.2.1, Tables C.6-1, C.6-5, C.6-6, C.6-7).
UNIQUE_KEYS: dict[Level, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

#: Query/Retrieve Level (0008,0052), PS3.4 C.4.1.1.3.1.
QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)
#: Specific Character Set (0008,0005), PS3.4 C.4.1.1.3.2.
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)

#: How a key's values match (PS3.4 C.2.2.2): ``uid`` (single value or list of UIDs),
#: ``string`` (single value or wild card), ``date``/``time`` (single value or range),
#: ``number`` (single value, compared as an integer), ``pn`` (a person name: single value or
#: wild card, per component group, ASCII case-insensitive), ``return`` (returned, never
#: matched).
Kind = Literal["uid", "string", "pn", "date", "time", "number", "return"]


def tag_of(keyword: str) -> BaseTag:
    """The tag of a DICOM dictionary ``keyword``; raises ``KeyError`` for an unknown one."""
    value = tag_for_keyword(keyword)
    if value is None:  # pragma: no cover - KEYS holds dictionary keywords only
        raise KeyError(keyword)
    return Tag(value)


@dataclass(frozen=True)
class KeyDef:
    """A supported key: its level, how it matches, where its value comes from."""

    keyword: str
    level: Level
    kind: Kind
    #: Attribute of the index entity of :attr:`level` (matching and value);
    #: ``None`` for computed keys.
    attribute: str | None = None
    #: Filled per batch of matches (counts, measured spacing...), see
    #: :mod:`scp.services.find.hits`.
    computed: bool = False

    @property
    def tag(self) -> BaseTag:
        return tag_of(self.keyword)

    @property
    def vr(self) -> str:
        return str(dictionary_VR(self.tag))

    @property
    def own_level_only(self) -> bool:
        """Computed and return-only keys answer only at their own level."""
        return self.computed or self.kind == "return"


KEYS: tuple[KeyDef, ...] = (
    # PATIENT level (PS3.4 Table C.6-1); in Study Root these are STUDY keys (Table C.6-5).
    # The index keeps them on the study row; a patient is the studies of one Patient ID.
    KeyDef("PatientName", "PATIENT", "pn", "patient_name"),
    KeyDef("PatientID", "PATIENT", "string", "patient_id"),
    KeyDef("NumberOfPatientRelatedStudies", "PATIENT", "return", computed=True),
    KeyDef("NumberOfPatientRelatedSeries", "PATIENT", "return", computed=True),
    KeyDef("NumberOfPatientRelatedInstances", "PATIENT", "return", computed=True),
    # STUDY level (PS3.4 Table C.6-5)
    KeyDef("StudyInstanceUID", "STUDY", "uid", "study_instance_uid"),
    KeyDef("AccessionNumber", "STUDY", "string", "accession_number"),
    KeyDef("StudyDate", "STUDY", "date", "study_date"),
    KeyDef("StudyTime", "STUDY", "time", "study_time"),
    KeyDef("StudyDescription", "STUDY", "string", "study_description"),
    KeyDef("ModalitiesInStudy", "STUDY", "string", computed=True),
    KeyDef("NumberOfStudyRelatedSeries", "STUDY", "return", computed=True),
    KeyDef("NumberOfStudyRelatedInstances", "STUDY", "return", computed=True),
    # SERIES level (PS3.4 Table C.6-6)
    KeyDef("SeriesInstanceUID", "SERIES", "uid", "series_instance_uid"),
    KeyDef("Modality", "SERIES", "string", "modality"),
    KeyDef("SeriesNumber", "SERIES", "number", "series_number"),
    KeyDef("SeriesDescription", "SERIES", "string", "series_description"),
    KeyDef("Manufacturer", "SERIES", "string", "manufacturer"),
    KeyDef("ManufacturerModelName", "SERIES", "string", "manufacturer_model_name"),
    KeyDef("StationName", "SERIES", "string", "station_name"),
    KeyDef("NumberOfSeriesRelatedInstances", "SERIES", "return", "instance_count"),
    KeyDef("SpacingBetweenSlices", "SERIES", "return", computed=True),
    KeyDef("PixelSpacing", "SERIES", "return", computed=True),
    KeyDef("SliceThickness", "SERIES", "return", computed=True),
    # IMAGE level (PS3.4 Table C.6-7)
    KeyDef("SOPInstanceUID", "IMAGE", "uid", "sop_instance_uid"),
    KeyDef("SOPClassUID", "IMAGE", "uid", "sop_class_uid"),
    KeyDef("InstanceNumber", "IMAGE", "number", "instance_number"),
    KeyDef("Rows", "IMAGE", "number", "rows"),
    KeyDef("Columns", "IMAGE", "number", "columns"),
    KeyDef("NumberOfFrames", "IMAGE", "number", "number_of_frames"),
    KeyDef("PixelSpacing", "IMAGE", "return", computed=True),
)
#: SERIES keys computed from the series geometry (the measured Z spacing and friends).
SERIES_GEOMETRY_KEYS = frozenset({"SpacingBetweenSlices", "PixelSpacing", "SliceThickness"})


def resolve_key(keyword: str, level: Level) -> KeyDef | None:
    """The key ``keyword`` means at a ``level`` query: its own level first, then above.

    Keys of a level above the query level that the index holds (Patient ID at SERIES
    level, Modality at IMAGE level) are matched and returned too; computed and return-only
    keys only at their own level.  ``None`` when the node does not support the key there
    (PS3.4 C.4.1.1.4: left out of the responses, pending status 0xFF01).  The PATIENT
    keys resolve at every level, which also makes them STUDY keys of Study Root.
    """
    depth = ALL_LEVELS.index(level)
    for candidate_level in reversed(ALL_LEVELS[: depth + 1]):
        for key in KEYS:
            if key.keyword != keyword or key.level != candidate_level:
                continue
            if candidate_level == level or not key.own_level_only:
                return key
    return None
