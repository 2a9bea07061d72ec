"""Typed values that cross the hl7 package boundary: what inbound messages say, what ORUs need.

Inbound HL7 is parsed into these frozen dataclasses so that the handler `integration` registers never
sees HL7 syntax (docs/architecture.md §2); outbound ORU^R01 is built from `OruCase` + `DifferentialResult`, which
`integration` fills from its case and from `ai`'s `Differential`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from acquisition.timestamps import Instant


class ResultStatus(StrEnum):
    """OBR-25 / OBX-11 result status (HL7 tables 0123 / 0085) as used by IHE LAB-3."""

    PRELIMINARY = "P"  # AI result, not reviewed
    FINAL = "F"  # signed by a pathologist
    CORRECTED = "C"  # correction of a final result


class Method(StrEnum):
    """OBX-17: who produced the value (AI classification or a reviewer's manual count)."""

    AI = "AI"
    MANUAL = "MANUAL"


@dataclass(frozen=True)
class MessageHeader:
    """What MSH says: enough to answer, de-duplicate and route, even if the rest does not parse."""

    control_id: str
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_code: str = ""  # MSH-9.1, e.g. OML
    trigger_event: str = ""  # MSH-9.2, e.g. O21
    version: str = ""  # MSH-12
    processing_id: str = "P"  # MSH-11
    charset: str = ""  # MSH-18
    timestamp: str = ""  # MSH-7 as sent

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger_event}"

    @property
    def sender(self) -> str:
        """The de-duplication scope: MSH-10 is unique per sending application and facility."""
        return f"{self.sending_application}|{self.sending_facility}"


@dataclass(frozen=True)
class PatientId:
    """One CX repetition of PID-3: the id with its assigning authority and identifier type."""

    id: str
    authority: str = ""
    type_code: str = ""


@dataclass(frozen=True)
class PersonName:
    family: str = ""
    given: str = ""
    middle: str = ""


@dataclass(frozen=True)
class Provider:
    """An XCN (ORC-12 / OBR-16): the ordering provider."""

    id: str = ""
    family: str = ""
    given: str = ""


@dataclass(frozen=True)
class Patient:
    """PID as typed values; `ids` keeps every PID-3 repetition, the first is the primary one."""

    ids: tuple[PatientId, ...]
    name: PersonName = field(default_factory=PersonName)
    birth_date: date | None = None
    sex: str = ""  # HL7 table 0001: F, M, O, U, A, N

    @property
    def primary_id(self) -> PatientId:
        return self.ids[0]


@dataclass(frozen=True)
class Order:
    """One order (OML^O21, OML^O33, ORM^O01): a case for one patient with its slides."""

    header: MessageHeader
    patient: Patient
    order_control: str  # ORC-1: NW new, CA cancel, XO change, SC status …
    placer_order_number: str
    filler_order_number: str
    accession_number: str
    ordering_provider: Provider | None = None
    priority: str = "R"  # S stat, A ASAP, R routine, T timing critical
    service_code: str = ""  # OBR-4.1
    service_text: str = ""  # OBR-4.2
    specimen_ids: tuple[str, ...] = ()
    slide_barcodes: tuple[str, ...] = ()
    #: OBR-7 observation (collection) date/time, with the precision it was sent in.
    collected_at: Instant | None = None


@dataclass(frozen=True)
class PatientUpdate:
    """ADT^A08: new demographics for a known patient."""

    header: MessageHeader
    patient: Patient


@dataclass(frozen=True)
class PatientMerge:
    """ADT^A40: `prior_ids` (MRG-1) are merged into `patient` (PID-3), which survives."""

    header: MessageHeader
    patient: Patient
    prior_ids: tuple[PatientId, ...]


InboundEvent = Order | PatientUpdate | PatientMerge


@dataclass(frozen=True)
class OruCase:
    """The case side of an ORU: who, which order, and where the images are."""

    patient: Patient
    placer_order_number: str
    filler_order_number: str  # OBR-3: the key that P → F → C refer to; must not change
    accession_number: str
    ordering_provider: Provider | None = None
    service_code: str = "BMDIFF"
    service_text: str = "Bone marrow differential"
    collected_at: Instant | None = None  # OBR-7; the analysis time when the order gave none
    study_instance_uid: str = ""
    study_url: str = ""  # DICOMweb study URL
    viewer_url: str = ""  # review page
    receiving_application: str = ""
    receiving_facility: str = ""


@dataclass(frozen=True)
class DifferentialResult:
    """A differential ready for HL7: per-class counts keyed by the 23 class codes (docs/architecture.md §5).

    Percentages are computed here from `counts` with the denominator rule of docs/architecture.md §5 (smudge
    and not-identifiable cells excluded by default), so every ORU says the same thing as the SR.
    """

    counts: dict[str, int]
    algorithm_name: str
    algorithm_version: str
    analysed_at: datetime
    method: Method = Method.AI
    me_ratio: float | None = None  # None: computed from counts with the default formula
    critical_classes: tuple[str, ...] | None = None  # None: classes flagged critical with count > 0
    unidentified: int = 0  # review bin "Unidentified" (below the confidence threshold)
    reviewer: str = ""
    comment: str = ""
