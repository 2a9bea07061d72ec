"""Inbound orders and ADT events: raw bytes → `Order` / `PatientUpdate` / `PatientMerge`.

hl7apy splits the message into segments, fields and repetitions for any version 2.3–2.8; we read
segments by name (not by group) so that the same code serves OML^O21, OML^O33 and the legacy ORM^O01,
whose group structures differ between versions. Every refusal is a `MessageError` carrying the HL7
error code (table 0357) and a sentence for ERR-8, so the ACK says why.
"""

from __future__ import annotations

from datetime import UTC, date, tzinfo

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException, InvalidName
from hl7apy.parser import parse_segment as hl7apy_parse_segment

from acquisition.timestamps import Instant, TimestampError, parse_hl7, parse_hl7_date
from hl7.codes import RESPONSES, SUPPORTED_VERSIONS, AckCode, ErrorCode
from hl7.encoding import Delimiters, decode, normalise_segments, read_header, unescape
from hl7.model import (
    InboundEvent,
    MessageHeader,
    Order,
    Patient,
    PatientId,
    PatientMerge,
    PatientUpdate,
    PersonName,
    Provider,
)


class MessageError(Exception):
    """A message we answer with AE (content error) or AR (rejected: type, version, envelope)."""

    def __init__(
        self, code: ErrorCode, reason: str, *, reject: bool = False, segment: str = "", field: int = 0
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.ack_code = AckCode.REJECT if reject else AckCode.ERROR
        self.segment = segment
        self.field = field


class _Segment:
    """Field access on one hl7apy segment: repetitions as ER7, components split and unescaped."""

    def __init__(self, element, delims: Delimiters) -> None:  # type: ignore[no-untyped-def]
        self.name: str = element.name
        self._fields: dict[int, list[str]] = {}
        self._delims = delims
        for child in element.children:
            if child.name is None:
                continue  # a field beyond the segment's definition in this version: not ours to read
            number = int(child.name.rsplit("_", 1)[1])
            self._fields.setdefault(number, []).append(child.to_er7())

    def reps(self, n: int) -> list[str]:
        return self._fields.get(n, [])

    def get(self, n: int, component: int = 1, rep: int = 0) -> str:
        reps = self.reps(n)
        if len(reps) <= rep:
            return ""
        parts = reps[rep].split(self._delims.component)
        value = parts[component - 1] if len(parts) >= component else ""
        return unescape(value.split(self._delims.subcomponent)[0], self._delims).strip()


def check_header(header: MessageHeader) -> None:
    """Envelope checks that need no parsing: version and message type (AR, as the standard says)."""
    if header.version not in SUPPORTED_VERSIONS:
        raise MessageError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"MSH-12 version {header.version!r} is not supported (accepted: {', '.join(SUPPORTED_VERSIONS)})",
            reject=True,
            segment="MSH",
            field=12,
        )
    if (header.message_code, header.trigger_event) not in RESPONSES:
        known_codes = {code for code, _ in RESPONSES}
        accepted = ", ".join(f"{c}^{t}" for c, t in RESPONSES)
        code = ErrorCode.UNSUPPORTED_EVENT if header.message_code in known_codes else ErrorCode.UNSUPPORTED_MESSAGE_TYPE
        raise MessageError(
            code,
            f"MSH-9 {header.message_type} is not supported (accepted: {accepted})",
            reject=True,
            segment="MSH",
            field=9,
        )


def parse_message(raw: bytes | str, zone: tzinfo = UTC) -> InboundEvent:
    """Decode (MSH-18), read the header, check it, parse the body into a typed event.

    Date/times without an offset are read in `zone`, the site's time zone (acquisition.timestamps).
    """
    text = decode(raw)[0] if isinstance(raw, bytes) else raw
    header, delims = read_header(text)
    check_header(header)
    return parse_body(normalise_segments(text), header, delims, zone)


#: The segments an event is read from; others (PV1, NTE, OBX, Z-segments …) are not parsed at all,
#: which keeps a message with an unknown or newer segment acceptable and parsing 5x faster.
_READ = ("PID", "MRG", "ORC", "OBR", "TQ1", "SPM", "SAC")
_OPTIONAL = ("TQ1", "SPM", "SAC")


def parse_body(text: str, header: MessageHeader, delims: Delimiters, zone: tzinfo = UTC) -> InboundEvent:
    if not delims.distinct:
        reason = f"bad encoding characters in MSH-1/MSH-2: {delims.field}{delims.component}{delims.repetition}"
        raise MessageError(
            ErrorCode.DATA_TYPE_ERROR, reason + delims.escape + delims.subcomponent, segment="MSH", field=2
        )
    chars = {
        "FIELD": delims.field,
        "COMPONENT": delims.component,
        "SUBCOMPONENT": delims.subcomponent,
        "REPETITION": delims.repetition,
        "ESCAPE": delims.escape,
        "SEGMENT": "\r",
        "GROUP": "\r",
    }
    version = "2.7" if header.version == "2.7.1" else header.version
    segs = []
    for line in text.split("\r")[1:]:
        name = line[:3]
        if name not in _READ:
            continue
        try:
            element = hl7apy_parse_segment(line, version, chars, VALIDATION_LEVEL.TOLERANT)
        except InvalidName:
            if name in _OPTIONAL:
                continue  # e.g. TQ1/SPM in a v2.3 message: not defined there, read what is
            raise MessageError(
                ErrorCode.SEGMENT_SEQUENCE, f"segment {name} is not defined in HL7 v{header.version}", segment=name
            ) from None
        except (HL7apyException, ValueError, IndexError, KeyError) as exc:
            raise MessageError(
                ErrorCode.DATA_TYPE_ERROR,
                f"segment {name} does not parse as HL7 v{header.version}: {exc}",
                segment=name,
            ) from exc
        segs.append(_Segment(element, delims))
    patient = _patient(_first(segs, "PID", required=True))
    if header.message_code == "ADT":
        if header.trigger_event == "A40":
            mrg = _first(segs, "MRG", required=True)
            prior = _ids(mrg, 1)
            if not prior:
                raise MessageError(
                    ErrorCode.REQUIRED_FIELD_MISSING, "MRG-1 (prior patient id) is empty", segment="MRG", field=1
                )
            return PatientMerge(header=header, patient=patient, prior_ids=prior)
        return PatientUpdate(header=header, patient=patient)
    return _order(segs, header, patient, zone)


def _first(segs: list[_Segment], name: str, *, required: bool = False) -> _Segment | None:
    found = next((s for s in segs if s.name == name), None)
    if found is None and required:
        raise MessageError(ErrorCode.SEGMENT_SEQUENCE, f"required segment {name} is missing", segment=name)
    return found


def _ids(seg: _Segment, n: int) -> tuple[PatientId, ...]:
    ids = []
    for rep in range(len(seg.reps(n))):
        value = seg.get(n, 1, rep)
        if value:
            ids.append(PatientId(value, seg.get(n, 4, rep), seg.get(n, 5, rep)))
    return tuple(ids)


def _patient(pid: _Segment) -> Patient:
    ids = _ids(pid, 3)
    if not ids:
        raise MessageError(
            ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 (patient identifier list) is empty", segment="PID", field=3
        )
    name = PersonName(pid.get(5, 1), pid.get(5, 2), pid.get(5, 3))
    birth = pid.get(7)
    return Patient(ids=ids, name=name, birth_date=_date(birth, "PID", 7) if birth else None, sex=pid.get(8).upper())


def _date(value: str, segment: str, field: int) -> date:
    """A date field (a birth date stays a date: no time, no zone)."""
    try:
        return parse_hl7_date(value)
    except TimestampError as exc:
        raise MessageError(
            ErrorCode.DATA_TYPE_ERROR, f"{segment}-{field} {exc.value!r} {exc.rule}", segment=segment, field=field
        ) from None


def _instant(value: str, segment: str, field: int, zone: tzinfo) -> Instant:
    """A DTM field as an instant; without an offset it is the sender's (the site's) local time."""
    try:
        return parse_hl7(value, zone)
    except TimestampError as exc:
        raise MessageError(
            ErrorCode.DATA_TYPE_ERROR, f"{segment}-{field} {exc.value!r} {exc.rule}", segment=segment, field=field
        ) from None


def _order(segs: list[_Segment], header: MessageHeader, patient: Patient, zone: tzinfo) -> Order:
    orc, obr = _first(segs, "ORC"), _first(segs, "OBR")
    if orc is None and obr is None:
        raise MessageError(ErrorCode.SEGMENT_SEQUENCE, "an order needs an ORC or OBR segment", segment="ORC")

    def pick(*candidates: tuple[_Segment | None, int]) -> str:
        return next((s.get(n) for s, n in candidates if s is not None and s.get(n)), "")

    placer = pick((orc, 2), (obr, 2))
    filler = pick((orc, 3), (obr, 3))
    # Accession: the placer group number (ORC-4), else the placer/filler fields of OBR, else the order
    # numbers; labs put it in different places and this order covers the common ones.
    accession = pick((orc, 4), (obr, 18), (obr, 20)) or filler or placer
    if not accession:
        raise MessageError(
            ErrorCode.REQUIRED_FIELD_MISSING,
            "no order number: ORC-2/ORC-3/ORC-4/OBR-2/OBR-3 are all empty",
            segment="ORC",
            field=2,
        )
    provider_seg, provider_field = (orc, 12) if orc is not None and orc.get(12) else (obr, 16)
    provider = None
    if provider_seg is not None and (provider_seg.get(provider_field) or provider_seg.get(provider_field, 2)):
        provider = Provider(
            provider_seg.get(provider_field), provider_seg.get(provider_field, 2), provider_seg.get(provider_field, 3)
        )
    tq1 = _first(segs, "TQ1")
    priority = (
        pick((tq1, 9))
        or (orc.get(7, 6) if orc else "")
        or (obr.get(27, 6) if obr else "")
        or (obr.get(5) if obr else "")
    )
    specimens = tuple(
        dict.fromkeys(s.get(2) or s.get(2, 2) for s in segs if s.name == "SPM" and (s.get(2) or s.get(2, 2)))
    )
    containers = tuple(dict.fromkeys(s.get(3) for s in segs if s.name == "SAC" and s.get(3)))
    return Order(
        header=header,
        patient=patient,
        order_control=(orc.get(1) if orc else "") or "NW",
        placer_order_number=placer,
        filler_order_number=filler,
        accession_number=accession,
        ordering_provider=provider,
        priority=(priority or "R").upper(),
        service_code=obr.get(4) if obr else "",
        service_text=obr.get(4, 2) if obr else "",
        specimen_ids=specimens,
        slide_barcodes=containers or specimens,
        collected_at=_instant(obr.get(7), "OBR", 7, zone) if obr and obr.get(7) else None,
    )
