"""hl7 messages without a network: parsing orders/ADT, ACK contents, ORU^R01 content and validity."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse

from acquisition import CELL_CLASSES
from acquisition.timestamps import Instant, Precision
from hl7 import (
    AckCode,
    DifferentialResult,
    ErrorCode,
    MessageError,
    Method,
    Order,
    OruCase,
    Patient,
    PatientId,
    PatientMerge,
    PatientUpdate,
    PersonName,
    Provider,
    ResultStatus,
    build_ack,
    build_oru,
    parse_message,
    read_ack,
)
from hl7.codes import PERCENT_LOINC, VERIFIED_LOINC
from hl7.encoding import read_header

OML_O21 = "\r".join(
    [
        "MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261125120000||OML^O21^OML_O21|MSG0001|P|2.5.1|||AL|NE||UNICODE UTF-8",
        "PID|1||P123^^^HOSP^MR~X9^^^OTHER^PI||Müller^Jürgen^K||19600101|M",
        "PV1|1|O",
        "ORC|NW|PL1^LIS|FL1^LAB|ACC1||||||||1234^Welby^Marcus",
        "TQ1|1||||||||S",
        "OBR|1|PL1^LIS|FL1^LAB|BMDIFF^Bone marrow differential^L|||20261125110000",
        "SPM|1|SP1^SP1F||BMA^Bone marrow aspirate^L",
        "SAC|||SLIDE-001",
        "SAC|||SLIDE-002",
    ]
)


def test_oml_o21_parses_into_an_order() -> None:
    order = parse_message(OML_O21.encode())
    assert isinstance(order, Order)
    assert order.header.control_id == "MSG0001"
    assert order.header.sender == "LIS|HOSP"
    assert order.patient.ids == (PatientId("P123", "HOSP", "MR"), PatientId("X9", "OTHER", "PI"))
    assert order.patient.name == PersonName("Müller", "Jürgen", "K")
    assert order.patient.birth_date == date(1960, 1, 1)
    assert order.patient.sex == "M"
    assert (order.placer_order_number, order.filler_order_number, order.accession_number) == ("PL1", "FL1", "ACC1")
    assert order.ordering_provider == Provider("1234", "Welby", "Marcus")
    assert order.priority == "S"
    assert order.specimen_ids == ("SP1",)
    assert order.slide_barcodes == ("SLIDE-001", "SLIDE-002")
    # No offset in OBR-7: the sender's wall clock, read in the site's zone (UTC unless one is given).
    assert order.collected_at == Instant(datetime(2026, 11, 25, 11, 0, tzinfo=UTC), Precision.SECOND, False)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings_are_tolerated(newline: str) -> None:
    order = parse_message((OML_O21.replace("\r", newline) + newline).encode())
    assert isinstance(order, Order) and order.slide_barcodes == ("SLIDE-001", "SLIDE-002")


def test_oml_o33_and_legacy_orm_o01() -> None:
    o33 = parse_message(OML_O21.replace("OML^O21^OML_O21", "OML^O33^OML_O33").replace("|2.5.1|", "|2.6|"))
    assert isinstance(o33, Order) and o33.header.trigger_event == "O33"
    legacy = "\r".join(
        [
            "MSH|^~\\&|OLDLIS|HOSP|MARROWLINK|LAB|199901011200||ORM^O01|L1|P|2.3",
            "PID|1||555^^^HOSP||Doe^John||19500505|M",
            "ORC|NW|PL9||ACC9|||^^^^^A|||||77^House^Greg",
            "OBR|1|PL9||BMDIFF^Marrow diff",
        ]
    )
    order = parse_message(legacy)
    assert isinstance(order, Order)
    assert (order.accession_number, order.priority, order.ordering_provider) == (
        "ACC9",
        "A",
        Provider("77", "House", "Greg"),
    )


def test_charsets_utf8_and_latin1() -> None:
    latin = OML_O21.replace("UNICODE UTF-8", "8859/1").encode("latin-1")
    assert parse_message(latin).patient.name.family == "Müller"
    assert parse_message(OML_O21.encode("utf-8")).patient.name.family == "Müller"
    undeclared = OML_O21.replace("UNICODE UTF-8", "").encode("latin-1")  # no MSH-18, not UTF-8: Latin-1
    assert parse_message(undeclared).patient.name.given == "Jürgen"


def test_adt_a08_and_a40() -> None:
    a08 = OML_O21.replace("OML^O21^OML_O21", "ADT^A08^ADT_A01").split("\rORC")[0]
    update = parse_message(a08)
    assert isinstance(update, PatientUpdate) and update.patient.primary_id.id == "P123"
    a40 = "\r".join(
        [
            "MSH|^~\\&|ADT|HOSP|MARROWLINK|LAB|20261125120000||ADT^A40^ADT_A39|MRG1|P|2.5.1",
            "PID|1||P123^^^HOSP^MR||Müller^Jürgen",
            "MRG|P999^^^HOSP^MR",
        ]
    )
    merge = parse_message(a40)
    assert isinstance(merge, PatientMerge) and merge.prior_ids == (PatientId("P999", "HOSP", "MR"),)


@pytest.mark.parametrize(
    ("change", "ack_code", "error_code", "words"),
    [
        (lambda m: m.replace("|2.5.1|", "|2.9|"), AckCode.REJECT, ErrorCode.UNSUPPORTED_VERSION, "version"),
        (
            lambda m: m.replace("OML^O21^OML_O21", "ORU^R01"),
            AckCode.REJECT,
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            "MSH-9",
        ),
        (lambda m: m.replace("OML^O21^OML_O21", "OML^O99"), AckCode.REJECT, ErrorCode.UNSUPPORTED_EVENT, "MSH-9"),
        (
            lambda m: m.replace("P123^^^HOSP^MR~X9^^^OTHER^PI", ""),
            AckCode.ERROR,
            ErrorCode.REQUIRED_FIELD_MISSING,
            "PID-3",
        ),
        (lambda m: m.replace("\rPID|", "\rZZZ|"), AckCode.ERROR, ErrorCode.SEGMENT_SEQUENCE, "PID"),
        (
            lambda m: "\r".join(s for s in m.split("\r") if s[:3] not in ("ORC", "OBR")),
            AckCode.ERROR,
            ErrorCode.SEGMENT_SEQUENCE,
            "ORC",
        ),
        (lambda m: m.replace("|^~\\&|", "|^^\\&|"), AckCode.ERROR, ErrorCode.DATA_TYPE_ERROR, "encoding characters"),
        (lambda m: m.replace("19600101", "1960-13-45"), AckCode.ERROR, ErrorCode.DATA_TYPE_ERROR, "PID-7"),
    ],
)
def test_refusals_say_why(change, ack_code: AckCode, error_code: ErrorCode, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MessageError) as info:
        parse_message(change(OML_O21))
    assert info.value.ack_code is ack_code
    assert info.value.code is error_code
    assert words in info.value.reason


def test_ack_contents_and_strict_validity() -> None:
    header = read_header(OML_O21)[0]
    ack = build_ack(header)
    assert ack.validate()
    text = ack.to_er7()
    assert "|ORL^O22^ORL_O22|" in text and "|LIS|HOSP|" in text
    assert read_ack(text).code == "AA" and read_ack(text).control_id == "MSG0001"
    error = build_ack(
        header,
        AckCode.ERROR,
        error_code=ErrorCode.REQUIRED_FIELD_MISSING,
        reason="PID-3 empty ^|&",
        error_segment="PID",
        error_field=3,
    )
    assert error.validate()
    reply = read_ack(error.to_er7())
    assert (reply.code, reply.control_id, reply.error_code, reply.error_text) == (
        "AE",
        "MSG0001",
        "101",
        "PID-3 empty ^|&",
    )
    strict = hl7apy_parse(error.to_er7(), validation_level=VALIDATION_LEVEL.STRICT)
    assert strict.err.err_2.to_er7() == "PID^1^3"


def test_odd_encoding_characters_still_get_msa2() -> None:
    header = read_header(OML_O21.replace("|^~\\&|", "|^^|").replace("MSG0001", "ODD|1"))[0]
    assert header.control_id == "ODD"
    reply = read_ack(build_ack(header, AckCode.ERROR, error_code=ErrorCode.DATA_TYPE_ERROR).to_er7())
    assert reply.control_id == "ODD"


def _case() -> OruCase:
    return OruCase(
        patient=Patient(
            ids=(PatientId("P123", "HOSP", "MR"),),
            name=PersonName("Müller", "Jürgen"),
            birth_date=date(1960, 1, 1),
            sex="M",
        ),
        placer_order_number="PL1",
        filler_order_number="FL1",
        accession_number="ACC1",
        ordering_provider=Provider("1234", "Welby", "Marcus"),
        study_instance_uid="1.2.826.0.1.3680043.8.498.1",
        study_url="http://mlk:8000/dicomweb/studies/1.2.826.0.1.3680043.8.498.1",
        viewer_url="http://mlk:8000/cases/ACC1?view=cells&slide=1",
        receiving_application="LIS",
        receiving_facility="HOSP",
    )


def _differential(**kw) -> DifferentialResult:  # type: ignore[no-untyped-def]
    counts = {c.code: 0 for c in CELL_CLASSES} | {
        "BLA": 30,
        "NGS": 50,
        "MYB": 10,
        "EBO": 15,
        "PEB": 5,
        "KSC": 7,
        "NIF": 3,
    }
    return DifferentialResult(counts, "marrowlink-xception", "1.2.0", datetime(2026, 11, 25, 12, 0, tzinfo=UTC), **kw)


def _obx(text: str) -> dict[str, list[str]]:
    """OBX-3.1 → fields (test-side reading of the ER7 text)."""
    return {seg.split("|")[3].split("^")[0]: seg.split("|") for seg in text.split("\r") if seg.startswith("OBX")}


def test_oru_content_and_units() -> None:
    message = build_oru(_case(), _differential(), ResultStatus.PRELIMINARY)
    assert message.validate()
    text = message.to_er7()
    segments = [s[:3] for s in text.split("\r")]
    assert segments[:7] == ["MSH", "PID", "PV1", "ORC", "OBR", "NTE", "OBX"]
    assert "|ORU^R01^ORU_R01|" in text and "|2.5.1|" in text
    assert "\rPV1|1|U" in text
    assert "NTE|1|L|AI-generated, research use, not for clinical diagnosis" in text
    obx = _obx(text)
    # denominator = 30+50+10+15+5 = 110 (KSC and NIF excluded)
    assert obx["ML-BLA-P"][5] == "27.3" and obx["ML-BLA-P"][6] == "%^percent^UCUM"
    assert obx["ML-BLA-N"][5] == "30" and obx["ML-BLA-N"][6] == "{cells}^cells^UCUM"
    assert (
        obx["56960-8"][3] == "56960-8^Segmented neutrophils/100 cells in Bone marrow^LN"
        "^ML-NGS-P^Segmented neutrophil/100 cells in Bone marrow^L"
    )
    assert obx["56960-8"][5] == "45.5"
    assert "ML-KSC-P" not in obx and obx["ML-KSC-N"][5] == "7"
    assert obx["11138-5"][5] == "3.00" and obx["11138-5"][6].startswith("{ratio}")  # (10+50)/(15+5)
    assert obx["38257-2"][5] == "120" and obx["ML-TOTAL-DIFF"][5] == "110"
    assert obx["40689-2"][5] == "18.2"
    assert obx["ML-CRIT"][2] == "CWE" and obx["ML-CRIT"][5] == "Y^Yes^HL70136" and obx["ML-CRIT"][8] == "AA"
    assert obx["ML-CRIT-CLASS"][5] == "BLA^Blast^L"
    assert obx["ML-STUDY"][2] == "RP" and obx["ML-STUDY"][5].startswith("http://mlk:8000/dicomweb/studies/1.2.826")
    assert obx["ML-VIEWER"][5] == "http://mlk:8000/cases/ACC1?view=cells\\T\\slide=1^MARROWLINK^TEXT^HTML"
    for fields in obx.values():
        assert fields[11] == "P"
        assert fields[17] == "AI^AI classification^L"
        assert fields[18] == "marrowlink-xception 1.2.0^MARROWLINK"
        assert fields[19] == "20261125120000+0000"
    strict = hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT)
    assert strict.validate()


def test_obr3_is_stable_across_p_f_c_and_status_follows() -> None:
    texts = {
        status: build_oru(_case(), _differential(method=Method.MANUAL, reviewer="Dr Gray"), status).to_er7()
        for status in ResultStatus
    }
    for status, text in texts.items():
        obr = next(s for s in text.split("\r") if s.startswith("OBR")).split("|")
        assert obr[3] == "FL1" and obr[25] == status.value
        assert all(f[11] == status.value for f in _obx(text).values())
    assert "AI-generated" not in texts[ResultStatus.FINAL] and "Research use only" in texts[ResultStatus.FINAL]
    assert "Reviewed and signed by Dr Gray" in texts[ResultStatus.CORRECTED]
    assert _obx(texts[ResultStatus.FINAL])["ML-BLA-P"][17] == "MANUAL^Manual count^L"


def test_no_critical_cells_and_local_system() -> None:
    counts = {"NGS": 40, "EBO": 10}
    d = DifferentialResult(counts, "alg", "1", datetime(2026, 1, 1, tzinfo=UTC))
    text = build_oru(_case(), d, ResultStatus.PRELIMINARY, local_system="99MLK").to_er7()
    obx = _obx(text)
    assert obx["ML-CRIT"][5] == "N^No^HL70136" and "ML-CRIT-CLASS" not in obx
    assert obx["ML-BLA-P"][3].endswith("^99MLK")


def test_bad_differential_is_refused() -> None:
    with pytest.raises(ValueError, match="XYZ"):
        build_oru(_case(), DifferentialResult({"XYZ": 1}, "a", "1", datetime.now(UTC)), ResultStatus.PRELIMINARY)


# Each LOINC code shipped, pinned with its display text (verified list only).
PINNED_LOINC = {
    "11105-4": "Basophils/100 cells in Bone marrow",
    "11106-2": "Eosinophils/100 cells in Bone marrow",
    "11108-8": "Lymphocytes/100 cells in Bone marrow",
    "56960-8": "Segmented neutrophils/100 cells in Bone marrow",
    "40689-2": "Erythroid cells/100 cells in Bone marrow",
    "11138-5": "Myeloid cells/Erythroid cells [Ratio] in Bone marrow",
    "38257-2": "Cells counted total [#] in Bone marrow",
    "48807-2": "Bone marrow aspiration report",
}


def test_loinc_codes_used_are_pinned() -> None:
    text = build_oru(_case(), _differential(), ResultStatus.PRELIMINARY).to_er7()
    used = {}
    for seg in text.split("\r"):
        fields = seg.split("|")
        coded = fields[3] if seg.startswith("OBX") else fields[4] if seg.startswith("OBR") else ""
        parts = coded.split("^")
        if len(parts) >= 3 and parts[2] == "LN":
            used[parts[0]] = parts[1]
    assert used == PINNED_LOINC
    for code, display in PINNED_LOINC.items():
        assert VERIFIED_LOINC[code] == display
    assert PERCENT_LOINC == {"BAS": "11105-4", "EOS": "11106-2", "LYT": "11108-8", "NGS": "56960-8"}
    blood_codes = {"26446-5", "35058-7", "24104-2", "13047-6", "11150-0", "11118-7", "11120-3"}
    assert not blood_codes & set(VERIFIED_LOINC)


def test_minimal_case_and_empty_differential_still_validate() -> None:
    case = OruCase(
        patient=Patient(ids=(PatientId("P|1^x"),), name=PersonName("O'Brien & Co", "Mary~Jane")),
        placer_order_number="",
        filler_order_number="FL9",
        accession_number="",
    )
    d = DifferentialResult({}, "alg", "1", datetime(2026, 1, 1, tzinfo=UTC), comment="line one\nline | two")
    message = build_oru(case, d, ResultStatus.CORRECTED)
    assert message.validate()
    text = message.to_er7()
    assert "PID|1||P\\F\\1\\S\\x||O'Brien \\T\\ Co^Mary\\R\\Jane" in text
    assert "NTE|2|L|line one line \\F\\ two" in text
    obx = _obx(text)
    assert obx["ML-BLA-P"][5] == "0.0" and "11138-5" not in obx  # no erythroid cells: no M:E ratio
    assert hl7apy_parse(text, validation_level=VALIDATION_LEVEL.STRICT).validate()
