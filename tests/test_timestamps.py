"""One time model: HL7 and DICOM dates and times in the shapes other systems send, read in the site's zone.

Real LIS orders mostly carry local times without an offset; these were refused with SQL in the ACK
before (an OBR-7 reached the database as a naive datetime). The table below is what senders send.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from acquisition.timestamps import (
    Precision,
    TimestampError,
    format_dicom,
    format_hl7,
    format_instant_hl7,
    parse_dicom,
    parse_dicom_dt,
    parse_hl7,
    parse_hl7_date,
    site_zone,
)
from hl7 import send_message
from tests.servers import marrowlink_server

BERLIN = ZoneInfo("Europe/Berlin")

#: (OBR-7 as sent, the UTC instant it means in Europe/Berlin, precision); the shapes real senders use.
ACCEPTED = [
    ("20261206000847", datetime(2026, 12, 5, 23, 8, 47, tzinfo=UTC), Precision.SECOND),  # no offset: local
    ("20261206000847+0100", datetime(2026, 12, 5, 23, 8, 47, tzinfo=UTC), Precision.SECOND),
    ("20261206000847+0000", datetime(2026, 12, 6, 0, 8, 47, tzinfo=UTC), Precision.SECOND),
    ("20261206000847-0500", datetime(2026, 12, 6, 5, 8, 47, tzinfo=UTC), Precision.SECOND),
    ("20261206", datetime(2026, 12, 5, 23, 0, tzinfo=UTC), Precision.DAY),  # date only
    ("202612060008", datetime(2026, 12, 5, 23, 8, tzinfo=UTC), Precision.MINUTE),
    ("2026120600", datetime(2026, 12, 5, 23, 0, tzinfo=UTC), Precision.HOUR),
    ("20261206000847.1234", datetime(2026, 12, 5, 23, 8, 47, 123400, tzinfo=UTC), Precision.FRACTION),
    ("20261206000847.5+0100", datetime(2026, 12, 5, 23, 8, 47, 500000, tzinfo=UTC), Precision.FRACTION),
    ("20240229", datetime(2024, 2, 28, 23, 0, tzinfo=UTC), Precision.DAY),  # a leap day
    ("20260701120000", datetime(2026, 7, 1, 10, 0, tzinfo=UTC), Precision.SECOND),  # summer time: +0200
]

#: (OBR-7 as sent, words the refusal must contain).
REFUSED = [
    ("20261332", "has month 13"),
    ("20260229", "not a leap year"),  # 2026 has no 29 February
    ("20261206250000", "outside 00:00:00 to 23:59:59"),
    ("2026-12-06T00:08:47", "not an HL7 date/time"),  # ISO 8601 is not HL7
    ("20261206000847+2500", "outside -1400 to +1400"),
    ("yesterday", "not an HL7 date/time"),
]


@pytest.mark.parametrize(("sent", "utc", "precision"), ACCEPTED)
def test_hl7_shapes_are_read_in_the_site_zone(sent: str, utc: datetime, precision: Precision) -> None:
    instant = parse_hl7(sent, BERLIN)
    assert instant.utc == utc and instant.utc.tzinfo is UTC
    assert instant.precision is precision
    assert instant.offset_given == ("+" in sent or "-" in sent[8:])


@pytest.mark.parametrize(("sent", "words"), REFUSED)
def test_impossible_hl7_values_are_refused_with_the_rule(sent: str, words: str) -> None:
    with pytest.raises(TimestampError, match=re.escape(words)) as caught:
        parse_hl7(sent, BERLIN)
    assert caught.value.value == sent


def test_daylight_saving_boundaries_in_berlin() -> None:
    """The spring gap and the autumn repeat resolve as zoneinfo does (fold=0); the hours around them exactly."""
    assert parse_hl7("20260329015900", BERLIN).utc == datetime(2026, 3, 29, 0, 59, tzinfo=UTC)  # CET
    assert parse_hl7("20260329030000", BERLIN).utc == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # CEST
    assert parse_hl7("20260329023000", BERLIN).utc == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # in the gap
    assert parse_hl7("20261025023000", BERLIN).utc == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # first of two
    assert parse_hl7("20261025023000+0100", BERLIN).utc == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # second
    assert parse_hl7("20261025030000", BERLIN).utc == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)  # CET again


def test_outbound_hl7_carries_the_site_offset_and_keeps_the_precision() -> None:
    winter, summer = datetime(2026, 12, 5, 23, 8, 47, tzinfo=UTC), datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert format_hl7(winter, BERLIN) == "20261206000847+0100"
    assert format_hl7(summer, BERLIN) == "20260701120000+0200"
    assert format_hl7(winter, ZoneInfo("America/New_York")) == "20261205180847-0500"
    for sent, _, _ in ACCEPTED:  # what goes out reads back as the same instant and precision
        first = parse_hl7(sent, BERLIN)
        again = parse_hl7(format_instant_hl7(first, BERLIN), BERLIN)
        assert (again.utc, again.precision) == (first.utc, first.precision)
    assert format_instant_hl7(parse_hl7("20261206", BERLIN), BERLIN) == "20261206"  # a day stays a day
    with pytest.raises(ValueError, match="naive"):
        format_hl7(datetime(2026, 12, 6), BERLIN)


def test_birth_dates_stay_dates() -> None:
    assert parse_hl7_date("19610203") == date(1961, 2, 3)
    assert parse_hl7_date("196102030000+0100") == date(1961, 2, 3)  # a DTM as sent by some systems
    with pytest.raises(TimestampError, match="not a date"):
        parse_hl7_date("1961")


def test_dicom_dates_times_and_offsets() -> None:
    assert parse_dicom("20261206", "000847", zone=BERLIN).utc == datetime(2026, 12, 5, 23, 8, 47, tzinfo=UTC)
    assert parse_dicom("20261206", "000847", "+0000", zone=BERLIN).utc == datetime(2026, 12, 6, 0, 8, 47, tzinfo=UTC)
    assert parse_dicom("2026.12.06", "00:08:47", zone=BERLIN).utc == datetime(2026, 12, 5, 23, 8, 47, tzinfo=UTC)
    assert parse_dicom("20261206", zone=BERLIN).precision is Precision.DAY
    assert parse_dicom_dt("20261206000847.123456-0500", zone=BERLIN).utc == datetime(
        2026, 12, 6, 5, 8, 47, 123456, tzinfo=UTC
    )
    with pytest.raises(TimestampError, match="DICOM date"):
        parse_dicom("06/12/2026", zone=BERLIN)
    stamp = format_dicom(datetime(2026, 7, 1, 10, 0, 0, 250000, tzinfo=UTC), BERLIN)
    assert (stamp.date, stamp.time, stamp.offset) == ("20260701", "120000.250000", "+0200")
    assert stamp.datetime == "20260701120000.250000+0200"


def test_site_zone_names_a_bad_setting() -> None:
    assert site_zone("Europe/Berlin") == BERLIN
    with pytest.raises(ValueError, match="Mars/Olympus"):
        site_zone("Mars/Olympus")


def _order(control_id: str, accession: str, obr7: str) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|LIS|HOSP|MARROWLINK|LAB|20261206000847||OML^O21^OML_O21|{control_id}|P|2.5.1",
            "PID|1||PAT7731^^^HOSP^MR||Testperson^Ada||19610203|F",
            "PV1|1|O",
            f"ORC|NW|{accession}||||||||||1234^Doctor^Dora",
            f"OBR|1|{accession}||48807-2^Bone marrow aspiration report^LN|||{obr7}",
        ]
    )


def test_orders_with_every_shape_through_a_served_mllp_listener(tmp_path: Path) -> None:
    """`marrowlink serve` in Europe/Berlin: accepted shapes are stored as the right UTC instant with their
    precision; impossible ones are refused with the field, the value and the rule; no answer has SQL in it."""
    with marrowlink_server(tmp_path / "data", env={"MARROWLINK_TIMEZONE": "Europe/Berlin"}) as server:

        def send(message: str):  # type: ignore[no-untyped-def]
            return asyncio.run(send_message("127.0.0.1", server.mllp_port, message))

        answers = {}
        for n, (sent, _, _) in enumerate(ACCEPTED):
            answers[sent] = send(_order(f"TS{n:03d}", f"PL{n:03d}", sent))
        refused = {}
        for n, (sent, _) in enumerate(REFUSED):
            refused[sent] = send(_order(f"TX{n:03d}", f"PX{n:03d}", sent))
        # The order from the report, as sent: OBR-7 local time, no offset.
        report = send(_order("CTL90001", "PL1", "20261206000847"))
    for sent, reply in answers.items():
        assert reply.code == "AA", (sent, reply.text)
        assert "|20" in reply.text and ("+0100" in reply.text.split("\r")[0])  # MSH-7 on the site's clock
    assert report.code == "AA", report.text
    for sent, words in REFUSED:
        reply = refused[sent]
        assert reply.code == "AE", (sent, reply.text)
        err = next(line for line in reply.text.split("\r") if line.startswith("ERR|"))
        assert "|OBR^1^7|" in err and f"OBR-7 '{sent}'" in err and words in err, err
        assert reply.error_code == "102"
    for reply in [*answers.values(), *refused.values(), report]:
        assert "SQL" not in reply.text and "Error:" not in reply.text and "Traceback" not in reply.text
    rows = dict(
        (accession, (at, precision))
        for accession, at, precision in sqlite3.connect(tmp_path / "data" / "index.sqlite3").execute(
            "SELECT accession_number, collected_at, collected_precision FROM cases"
        )
    )
    for n, (_, utc, precision) in enumerate(ACCEPTED):
        at, kept = rows[f"PL{n:03d}"]
        stored = datetime.fromisoformat(at)
        assert (stored if stored.tzinfo else stored.replace(tzinfo=UTC)) == utc
        assert kept == int(precision)
    assert not any(accession.startswith("PX") for accession in rows)


def test_the_oru_says_every_time_on_the_site_clock() -> None:
    """MSH-7, OBR-7 (a day stays a day), OBR-22 and OBX-14/19 all carry the site's offset."""
    from acquisition import CELL_CLASSES
    from hl7 import DifferentialResult, OruCase, Patient, PatientId, ResultStatus, build_oru

    case = OruCase(
        patient=Patient(ids=(PatientId("PAT7731", "HOSP", "MR"),), birth_date=date(1961, 2, 3)),
        placer_order_number="PL1",
        filler_order_number="PL1",
        accession_number="PL1",
        collected_at=parse_hl7("20261206", BERLIN),
    )
    analysed = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    result = DifferentialResult({c.code: 1 for c in CELL_CLASSES}, "marrowlink", "1", analysed)
    segments = build_oru(case, result, ResultStatus.PRELIMINARY, zone=BERLIN).to_er7().split("\r")
    fields = {s[:3]: s.split("|") for s in segments}
    assert fields["MSH"][6].endswith("+0100")
    assert fields["PID"][7] == "19610203"
    assert fields["OBR"][7] == "20261206"  # as the order sent it: a date
    assert fields["OBR"][22].endswith("+0100")
    observations = [s.split("|") for s in segments if s.startswith("OBX")]
    assert {(o[14], o[19]) for o in observations} == {("20261206103000+0100", "20261206103000+0100")}


def test_dicom_objects_carry_the_site_clock_and_its_offset() -> None:
    """The WSI (Study/Content/Acquisition date-time) and the SEG/ANN/SR (Content/Series) with TimezoneOffsetFromUTC."""
    import numpy as np

    from acquisition.wsi import FovCapture, SlideContext, encode_slide
    from ai.dicom import SeriesSlot, write_differential_report
    from ai.results import Differential

    scanned = datetime(2026, 7, 1, 6, 0, 30, tzinfo=UTC)
    context = SlideContext(container_identifier="BM-TZ-1", uid_root="1.2.826.0.1.3680043.8.498.",
                           acquisition_datetime=scanned, zone=BERLIN)  # fmt: skip
    pixels = np.full((300, 400, 3), 200, np.uint8)
    datasets = encode_slide(
        overview=np.full((200, 300, 3), 220, np.uint8),
        overview_origin_um=(20000.0, 8000.0),
        overview_pixel_size_um=0.345,
        fovs=[FovCapture(20010.0, 8010.0, 400, 300, lambda: pixels)],
        fov_pixel_size_um=0.08625,
        context=context,
    )
    for ds in datasets:
        written = (ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC)
        assert [str(v) for v in written] == ["20260701", "080030", "20260701", "080030", "+0200"]
        assert str(ds.AcquisitionDateTime) == "20260701080030+0200"
    sparse = datasets[0]
    made = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    sr = write_differential_report(
        source=sparse, seg=None, ann=None, differential=Differential.from_classes([]),
        algorithm=_algorithm(), regions=[], series=SeriesSlot("1.2.826.0.1.3680043.8.498.", 5,
                                                             zone=ZoneInfo("America/New_York"), created=made),
    )  # fmt: skip
    written = (sr.ContentDate, sr.ContentTime, sr.SeriesDate, sr.SeriesTime, sr.TimezoneOffsetFromUTC)
    assert [str(v) for v in written] == ["20261206", "043000", "20261206", "043000", "-0500"]


def _algorithm():  # type: ignore[no-untyped-def]
    from ai.dicom import AlgorithmInfo

    return AlgorithmInfo("marrowlink-test", "1", "c" * 64, {})
