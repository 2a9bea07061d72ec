"""ORU^R01 v2.5.1 (IHE LAB-3 shape) for a bone-marrow differential: P (AI), F (signed), C (corrected).

MSH, PID, PV1, ORC, OBR, NTE, then OBX per class (NM percent "%" and NM count "{cells}"), aggregates
(erythroid %, M:E ratio, totals with and without smudge / not-identifiable / unidentified), the
critical-cell flag (CWE) and RP links. OBR-3 is the case's filler order number in every status, so a
LIS can file F and C over P. Percentages use the denominator of docs/architecture.md §5: all classes except
KSC and NIF (and the "Unidentified" review bin), which are counted but get no percentage.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo

from hl7apy.core import Message

from acquisition import CELL_CLASSES, ERYTHROID_CODES, GRANULOCYTIC_CODES, NOT_CLASSED_CODES, CellClass
from acquisition.timestamps import format_hl7, format_instant_hl7
from hl7.ack import fill_msh, new_control_id
from hl7.codes import (
    ERYTHROID_PERCENT_LOINC,
    ME_RATIO_LOINC,
    OUTPUT_VERSION,
    PERCENT_LOINC,
    REPORT_LOINC,
    TOTAL_COUNTED_LOINC,
    Coded,
    loinc,
)
from hl7.encoding import escape
from hl7.model import DifferentialResult, Method, OruCase, Provider, ResultStatus

PRELIMINARY_NOTE = "AI-generated, research use, not for clinical diagnosis"
RESEARCH_NOTE = "Research use only, not for clinical diagnosis"
UNITS_PERCENT = Coded("%", "percent", "UCUM")
UNITS_CELLS = Coded("{cells}", "cells", "UCUM")
UNITS_RATIO = Coded("{ratio}", "ratio", "UCUM")


def _number(value: float) -> str:
    return f"{value:.1f}" if abs(value - round(value)) > 1e-9 else str(round(value))


def _set(field, *components: str) -> None:  # type: ignore[no-untyped-def]
    """Assign components through hl7apy (which builds the datatype's children), each escaped."""
    parts = [escape(c) for c in components]
    while parts and not parts[-1]:
        parts.pop()
    field.value = "^".join(parts)


def _coded(c: Coded, alternate: Coded | None = None) -> tuple[str, ...]:
    if alternate is None:
        return (c.code, c.text, c.system)
    return (c.code, c.text, c.system, alternate.code, alternate.text, alternate.system)


def denominator(counts: dict[str, int]) -> int:
    return sum(n for code, n in counts.items() if code not in NOT_CLASSED_CODES)


def me_ratio(counts: dict[str, int]) -> float | None:
    """Granulocytic (PMO+APL+MYB+MMZ+NGB+NGS+EOS+ABE+BAS) / erythroid (PEB+EBO); None without erythroid cells."""
    erythroid = sum(counts.get(c, 0) for c in ERYTHROID_CODES)
    return sum(counts.get(c, 0) for c in GRANULOCYTIC_CODES) / erythroid if erythroid else None


def _check(differential: DifferentialResult) -> None:
    known = {c.code for c in CELL_CLASSES}
    unknown = sorted(set(differential.counts) - known)
    if unknown:
        raise ValueError(f"counts has unknown cell class codes {unknown}; expected the 23 codes of the catalogue")
    if any(n < 0 for n in differential.counts.values()) or differential.unidentified < 0:
        raise ValueError("counts must not be negative")


class _Observations:
    """Appends OBX segments with the fields every observation shares (status, method, equipment, time)."""

    def __init__(self, group, differential: DifferentialResult, status: ResultStatus, zone: tzinfo) -> None:  # type: ignore[no-untyped-def]
        self.group = group
        self.analysed = format_hl7(differential.analysed_at, zone)
        self.status = status
        self.differential = differential
        self.count = 0

    def add(self, value_type: str, code: tuple[str, ...], value: Iterable[str] | str, *, units: Coded | None = None,
            sub_id: str = "", abnormal: str = "") -> None:  # fmt: skip
        self.count += 1
        obx = self.group.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        d = self.differential
        obx.obx_1.value = str(self.count)
        obx.obx_2.value = value_type
        _set(obx.obx_3, *code)
        if sub_id:
            obx.obx_4.value = sub_id
        if isinstance(value, str):
            obx.obx_5.value = escape(value)
        else:
            _set(obx.obx_5, *value)
        if units is not None:
            _set(obx.obx_6, *_coded(units))
        if abnormal:
            obx.obx_8.value = abnormal
        obx.obx_11.value = self.status.value
        obx.obx_14.value = self.analysed
        method = ("AI", "AI classification") if d.method is Method.AI else ("MANUAL", "Manual count")
        _set(obx.obx_17, *method, self.local)
        _set(obx.obx_18, f"{d.algorithm_name} {d.algorithm_version}".strip(), "MARROWLINK")
        obx.obx_19.value = self.analysed

    local = "L"


def build_oru(
    case: OruCase,
    differential: DifferentialResult,
    status: ResultStatus,
    *,
    control_id: str | None = None,
    local_system: str = "L",
    sending_facility: str = "",
    processing_id: str = "P",
    zone: tzinfo = UTC,
) -> Message:
    """The ORU^R01 message for one differential; `.to_er7()` gives the text, `.validate()` checks it.

    Every date/time in it (MSH-7, OBR-7/22, OBX-14/19) is on the site's clock (`zone`) with its offset.
    """
    _check(differential)
    message = Message("ORU_R01", version=OUTPUT_VERSION)
    fill_msh(
        message,
        code="ORU",
        trigger="R01",
        structure="ORU_R01",
        control_id=control_id or new_control_id(),
        receiving_application=case.receiving_application,
        receiving_facility=case.receiving_facility,
        sending_facility=sending_facility,
        processing_id=processing_id,
        zone=zone,
    )
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    _patient(result.add_group("ORU_R01_PATIENT"), case)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    _order(order, case, differential, status, local_system, zone)
    obs = _Observations(order, differential, status, zone)
    obs.local = local_system
    _class_observations(obs, differential, local_system)
    _summary_observations(obs, differential, local_system)
    _links(obs, case, local_system)
    return message


def _patient(group, case: OruCase) -> None:  # type: ignore[no-untyped-def]
    pid = group.add_segment("PID")
    pid.pid_1.value = "1"
    for patient_id in case.patient.ids:
        _set(pid.add_field("PID_3"), patient_id.id, "", "", patient_id.authority, patient_id.type_code)
    name = case.patient.name
    if name.family or name.given:
        _set(pid.pid_5, name.family, name.given, name.middle)
    if case.patient.birth_date:
        pid.pid_7.value = case.patient.birth_date.strftime("%Y%m%d")
    if case.patient.sex:
        pid.pid_8.value = case.patient.sex
    pv1 = group.add_group("ORU_R01_VISIT").add_segment("PV1")
    pv1.pv1_1.value = "1"
    pv1.pv1_2.value = "U"  # patient class unknown to the lab system


def _provider(field, provider: Provider | None) -> None:  # type: ignore[no-untyped-def]
    if provider is not None and (provider.id or provider.family):
        _set(field, provider.id, provider.family, provider.given)


def _order(group, case: OruCase, d: DifferentialResult, status: ResultStatus, local: str, zone: tzinfo) -> None:  # type: ignore[no-untyped-def]
    orc = group.add_segment("ORC")
    orc.orc_1.value = "RE"  # observations to follow
    if case.placer_order_number:
        _set(orc.orc_2, case.placer_order_number)
    _set(orc.orc_3, case.filler_order_number)
    if case.accession_number:
        _set(orc.orc_4, case.accession_number)
    orc.orc_5.value = "IP" if status is ResultStatus.PRELIMINARY else "CM"
    _provider(orc.orc_12, case.ordering_provider)
    obr = group.add_segment("OBR")
    obr.obr_1.value = "1"
    if case.placer_order_number:
        _set(obr.obr_2, case.placer_order_number)
    _set(obr.obr_3, case.filler_order_number)
    local_service = Coded(case.service_code, case.service_text, local)
    _set(obr.obr_4, *_coded(loinc(REPORT_LOINC), local_service if case.service_code else None))
    collected = case.collected_at
    obr.obr_7.value = format_instant_hl7(collected, zone) if collected else format_hl7(d.analysed_at, zone)
    _provider(obr.obr_16, case.ordering_provider)
    obr.obr_22.value = format_hl7(datetime.now(UTC), zone)
    obr.obr_24.value = "HM"  # diagnostic service section: haematology (HL7 table 0074)
    obr.obr_25.value = status.value
    notes = [PRELIMINARY_NOTE if status is ResultStatus.PRELIMINARY else RESEARCH_NOTE]
    if d.reviewer and status is not ResultStatus.PRELIMINARY:
        notes.append(f"Reviewed and signed by {d.reviewer}")
    if d.comment:
        notes.append(d.comment)
    for number, text in enumerate(notes, start=1):
        nte = group.add_segment("NTE")
        nte.nte_1.value = str(number)
        nte.nte_2.value = "L"  # source: the filler (ancillary)
        nte.nte_3.value = escape(text)


def _class_code(cell: CellClass, kind: str, local: str) -> tuple[str, ...]:
    if kind == "P":
        own = Coded(f"ML-{cell.code}-P", f"{cell.name}/100 cells in Bone marrow", local)
        verified = PERCENT_LOINC.get(cell.code)
        return _coded(loinc(verified), own) if verified else _coded(own)
    return _coded(Coded(f"ML-{cell.code}-N", f"{cell.name} [#] in Bone marrow", local))


def _class_observations(obs: _Observations, d: DifferentialResult, local: str) -> None:
    base = denominator(d.counts)
    for cell in CELL_CLASSES:
        count = d.counts.get(cell.code, 0)
        if cell.code not in NOT_CLASSED_CODES:
            percent = 100.0 * count / base if base else 0.0
            obs.add("NM", _class_code(cell, "P", local), f"{percent:.1f}", units=UNITS_PERCENT)
        obs.add("NM", _class_code(cell, "N", local), str(count), units=UNITS_CELLS)


def _summary_observations(obs: _Observations, d: DifferentialResult, local: str) -> None:
    base = denominator(d.counts)
    erythroid = sum(d.counts.get(c, 0) for c in ERYTHROID_CODES)
    own = Coded("ML-ERY-P", "Erythroid cells/100 cells in Bone marrow", local)
    value = f"{100.0 * erythroid / base:.1f}" if base else "0.0"
    obs.add("NM", _coded(loinc(ERYTHROID_PERCENT_LOINC), own), value, units=UNITS_PERCENT)
    ratio = d.me_ratio if d.me_ratio is not None else me_ratio(d.counts)
    if ratio is not None:
        own = Coded("ML-ME", "Myeloid/Erythroid ratio in Bone marrow", local)
        obs.add("NM", _coded(loinc(ME_RATIO_LOINC), own), f"{ratio:.2f}", units=UNITS_RATIO)
    total_all = sum(d.counts.values()) + d.unidentified
    own = Coded("ML-TOTAL", "Cells counted total incl. smudge, not identifiable, unidentified", local)
    obs.add("NM", _coded(loinc(TOTAL_COUNTED_LOINC), own), str(total_all), units=UNITS_CELLS)
    own = Coded("ML-TOTAL-DIFF", "Cells in differential excl. smudge, not identifiable, unidentified", local)
    obs.add("NM", _coded(own), str(base), units=UNITS_CELLS)
    own = Coded("ML-UNID-N", "Unidentified cells (below confidence threshold) [#]", local)
    obs.add("NM", _coded(own), str(d.unidentified), units=UNITS_CELLS)
    critical = d.critical_classes
    if critical is None:
        critical = tuple(c.code for c in CELL_CLASSES if c.critical and d.counts.get(c.code, 0) > 0)
    flag = ("Y", "Yes", "HL70136") if critical else ("N", "No", "HL70136")
    own = Coded("ML-CRIT", "Critical cell forms present", local)
    obs.add("CWE", _coded(own), flag, abnormal="AA" if critical else "N")
    names = {c.code: c.name for c in CELL_CLASSES}
    for number, code in enumerate(critical, start=1):
        own = Coded("ML-CRIT-CLASS", "Critical cell form found", local)
        obs.add("CWE", _coded(own), (code, names.get(code, code), local), sub_id=str(number), abnormal="AA")


def _links(obs: _Observations, case: OruCase, local: str) -> None:
    if case.study_url:
        own = Coded("ML-STUDY", "DICOMweb study of the slide images", local)
        obs.add("RP", _coded(own), (case.study_url, "MARROWLINK", "IM", "DICOM"))
    if case.viewer_url:
        own = Coded("ML-VIEWER", "Review page of the case", local)
        obs.add("RP", _coded(own), (case.viewer_url, "MARROWLINK", "TEXT", "HTML"))
    if case.study_instance_uid:
        own = Coded("ML-STUDY-UID", "Study Instance UID", local)
        obs.add("ST", _coded(own), case.study_instance_uid)
