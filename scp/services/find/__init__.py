"""C-FIND SCP over the index: Study Root and Patient Root Query/Retrieve - FIND.

SOP Classes 1.2.840.10008.5.1.4.1.2.2.1 (Study Root, PS3.4 C.6.2; levels STUDY, SERIES,
IMAGE) and 1.2.840.10008.5.1.4.1.2.1.1 (Patient Root, PS3.4 C.6.1; levels PATIENT, STUDY,
SERIES, IMAGE); relational queries (PS3.4 C.4.1.2.2) or baseline hierarchical search
(PS3.4 C.4.1.3.1); matching (PS3.4 C.2.2.2) translated into SQL so the database does the
filtering.  One module per job:

* :mod:`.keys` -- the supported keys per level, how each matches, where its value lives;
* :mod:`.identifier` -- parse and check a request identifier into a :class:`FindRequest`
  (PS3.4 C.4.1.1.3.1; pydicom only);
* :mod:`.sql` -- the SQLAlchemy statement of a request (PS3.4 C.2.2.2);
* :mod:`.hits` -- the matches of a batch and the values computed for them (counts,
  Modalities in Study, the spacing the node measured);
* :mod:`.answer` -- a match as a pending response's identifier (PS3.4 C.4.1.1.3.2);
* :mod:`.errors` -- :class:`FindError`, the failure a request ends with;
* :mod:`.service` -- :class:`FindService`: runs a :class:`CFindRequest` (what the network
  layer received), max results, cancel, statuses.

Nothing here imports the network layer (``scp.net``, pynetdicom) or HTTP (``scp.api``).
"""

from scp.services.find.answer import UTF8, response_identifier
from scp.services.find.errors import FindError
from scp.services.find.hits import Hit
from scp.services.find.identifier import (
    Criterion,
    FindRequest,
    Term,
    parse_identifier,
    query_level,
)
from scp.services.find.keys import (
    ALL_LEVELS,
    KEYS,
    LEVELS,
    MODEL_LEVELS,
    PATIENT_ROOT_SOP_CLASS_UID,
    QUERY_RETRIEVE_LEVEL,
    SOP_CLASS_UID,
    SPECIFIC_CHARACTER_SET,
    UNIQUE_KEYS,
    KeyDef,
    Kind,
    Level,
    Model,
    resolve_key,
)
from scp.services.find.service import BATCH_SIZE, CFindRequest, FindResponse, FindService

__all__ = [
    "ALL_LEVELS",
    "BATCH_SIZE",
    "KEYS",
    "LEVELS",
    "MODEL_LEVELS",
    "PATIENT_ROOT_SOP_CLASS_UID",
    "QUERY_RETRIEVE_LEVEL",
    "SOP_CLASS_UID",
    "SPECIFIC_CHARACTER_SET",
    "UNIQUE_KEYS",
    "UTF8",
    "CFindRequest",
    "Criterion",
    "FindError",
    "FindRequest",
    "FindResponse",
    "FindService",
    "Hit",
    "KeyDef",
    "Kind",
    "Level",
    "Model",
    "Term",
    "parse_identifier",
    "query_level",
    "resolve_key",
    "response_identifier",
]
