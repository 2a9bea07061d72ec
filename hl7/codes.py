"""Code tables for HL7: the 23 cell classes, the verified LOINC codes, HL7 error and ack codes.

LOINC codes come only from the verified bone-marrow list (docs/hl7-interface.md §4.2); each is pinned by a
test (code + display). Every other observation goes out with a local code (coding system "L" or the
one a site configures) and the class name, never with a guessed LOINC.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Coded:
    """A CWE triple: code, display text, coding system (HL7 table 0396)."""

    code: str
    text: str
    system: str


# The 23 classes, their names, the M:E membership and the percentage rule live in ONE catalogue
# (`acquisition`, data only) under the same names everywhere; HL7 adds only what is HL7's: codes, systems, LOINC.

LOINC = "LN"

#: Verified bone-marrow LOINC codes , code → display.
VERIFIED_LOINC = {
    "11105-4": "Basophils/100 cells in Bone marrow",
    "11106-2": "Eosinophils/100 cells in Bone marrow",
    "11108-8": "Lymphocytes/100 cells in Bone marrow",
    "11109-6": "Mast cells/100 cells in Bone marrow",
    "56960-8": "Segmented neutrophils/100 cells in Bone marrow",
    "40689-2": "Erythroid cells/100 cells in Bone marrow",
    "11138-5": "Myeloid cells/Erythroid cells [Ratio] in Bone marrow",
    "38257-2": "Cells counted total [#] in Bone marrow",
    "43415-9": "Unidentified cells/100 cells in Bone marrow",
    "44903-3": "Malignant cells/100 cells in Bone marrow",
    "48807-2": "Bone marrow aspiration report",
}

#: Class percentages that have a verified LOINC code meaning exactly that class. NIF, TUM and the
#: blood-only codes stay local: "unidentified"/"malignant" are broader than our classes, and the
#: blood codes are wrong for marrow.
PERCENT_LOINC = {"BAS": "11105-4", "EOS": "11106-2", "LYT": "11108-8", "NGS": "56960-8"}
ERYTHROID_PERCENT_LOINC = "40689-2"
ME_RATIO_LOINC = "11138-5"
TOTAL_COUNTED_LOINC = "38257-2"
REPORT_LOINC = "48807-2"


def loinc(code: str) -> Coded:
    """A verified LOINC code; anything else is a programming error, not a silent guess."""
    return Coded(code, VERIFIED_LOINC[code], LOINC)


class AckCode(StrEnum):
    """MSA-1 in original acknowledgment mode (HL7 table 0008)."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


class ErrorCode(StrEnum):
    """ERR-3 (HL7 table 0357): why a message was not accepted."""

    SEGMENT_SEQUENCE = "100"
    REQUIRED_FIELD_MISSING = "101"
    DATA_TYPE_ERROR = "102"
    TABLE_VALUE_NOT_FOUND = "103"
    UNSUPPORTED_MESSAGE_TYPE = "200"
    UNSUPPORTED_EVENT = "201"
    UNSUPPORTED_PROCESSING_ID = "202"
    UNSUPPORTED_VERSION = "203"
    UNKNOWN_KEY = "204"
    DUPLICATE_KEY = "205"
    RECORD_LOCKED = "206"
    INTERNAL_ERROR = "207"


ERROR_TEXT = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE_ERROR: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.RECORD_LOCKED: "Application record locked",
    ErrorCode.INTERNAL_ERROR: "Application internal error",
}

#: Input versions accepted (2.3 to 2.8 where the segments parse).
SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
OUTPUT_VERSION = "2.5.1"

#: (MSH-9.1, MSH-9.2) accepted inbound → (response message code, trigger, hl7apy structure).
RESPONSES = {
    ("OML", "O21"): ("ORL", "O22", "ORL_O22"),
    ("OML", "O33"): ("ORL", "O34", "ORL_O34"),
    ("ORM", "O01"): ("ACK", "O01", "ACK"),
    ("ADT", "A08"): ("ACK", "A08", "ACK"),
    ("ADT", "A40"): ("ACK", "A40", "ACK"),
}
