"""One time model for HL7 and DICOM: every date/time that enters is read here, every one that leaves is written here.

Other systems send local times without an offset more often than not (an HL7 DTM `20261206000847`, a
DICOM DA/TM pair without TimezoneOffsetFromUTC). Such a value means the sender's wall clock, which for a
site's own LIS, scanner and PACS is the site's clock: it is read in the site's configured time zone
(`MARROWLINK_TIMEZONE`, an IANA name; default the host's zone) and kept as an aware UTC instant with the
precision it was sent in, so a day stays a day and never becomes a midnight timestamp. Values that leave
carry the site's offset, so HL7 and DICOM say the same wall-clock time with the same offset.

Local times that a daylight-saving change makes ambiguous (the repeated hour in autumn) are read as the
first of the two, and times in the skipped spring hour as if the clock had not moved yet (PEP 495,
fold=0): the same rule the standard library's zoneinfo applies.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from enum import IntEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class TimestampError(ValueError):
    """A date/time that is not one: `value` as sent, `rule` in words a sender's analyst can act on."""

    def __init__(self, value: str, rule: str) -> None:
        self.value = value
        self.rule = rule
        super().__init__(f"{value!r} {rule}")


class Precision(IntEnum):
    """How much of a date/time was sent, in digits of YYYYMMDDHHMMSS (fractions: 15)."""

    YEAR = 4
    MONTH = 6
    DAY = 8
    HOUR = 10
    MINUTE = 12
    SECOND = 14
    FRACTION = 15


@dataclass(frozen=True)
class Instant:
    """A point in time as an aware UTC datetime, with the precision and whether the sender gave an offset.

    A value of day precision or coarser is the start of that period in the zone it was read in.
    """

    utc: datetime
    precision: Precision
    offset_given: bool

    @property
    def has_time(self) -> bool:
        return self.precision > Precision.DAY

    def in_zone(self, zone: tzinfo) -> datetime:
        return self.utc.astimezone(zone)


def site_zone(name: str | None = None) -> tzinfo:
    """The zone local times are read in: an IANA name, else TZ, else the host's /etc/localtime, else UTC.

    Raises ValueError naming the setting when `name` is not a known IANA zone.
    """
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"time zone {name!r} is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)"
            ) from exc
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    localtime = Path("/etc/localtime")
    if localtime.exists():
        try:
            with localtime.open("rb") as f:
                return ZoneInfo.from_file(f, key="localtime")
        except (OSError, ValueError):
            pass
    return UTC


def _offset(text: str, value: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 14 or minutes > 59:
        raise TimestampError(value, f"has offset {text}, outside -1400 to +1400")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _build(value: str, parts: list[str | None], fraction: str | None, offset: str | None, zone: tzinfo) -> Instant:
    digits = [p for p in parts if p is not None]
    numbers = [int(p) for p in digits]
    year, month, day, hour, minute, second = numbers + [1, 1, 0, 0, 0][len(numbers) - 1 :]
    if len(numbers) >= 2 and not 1 <= month <= 12:
        raise TimestampError(value, f"has month {month:02d}: months are 01 to 12")
    if hour > 23 or minute > 59 or second > 59:
        raise TimestampError(value, "has a time outside 00:00:00 to 23:59:59")
    micro = int((fraction or "0").ljust(6, "0")[:6])
    try:
        naive = datetime(year, month, day, hour, minute, second, micro)
    except ValueError:
        leap = " (not a leap year)" if (month, day) == (2, 29) else ""
        rule = f"has day {day:02d}, which month {month:02d} of {year} does not have{leap}"
        raise TimestampError(value, rule) from None
    precision = Precision(len("".join(digits))) if fraction is None else Precision.FRACTION
    given = offset is not None
    local = naive.replace(tzinfo=_offset(offset, value) if given else zone)  # type: ignore[arg-type]
    return Instant(local.astimezone(UTC), precision, given)


_HL7_DTM = re.compile(
    r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?([+-]\d{4})?$"
)


def parse_hl7(value: str, zone: tzinfo) -> Instant:
    """An HL7 v2 DTM/TS: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]; local times read in `zone`."""
    text = value.strip()
    match = _HL7_DTM.match(text)
    if match is None:
        raise TimestampError(
            value, "is not an HL7 date/time: expected YYYY[MM[DD[HH[MM[SS[.SSSS]]]]]] and an optional +/-ZZZZ offset"
        )
    *parts, fraction, offset = match.groups()
    return _build(value, parts, fraction, offset, zone)


def parse_hl7_date(value: str) -> date:
    """An HL7 date (a birth date): YYYYMMDD, or a longer DTM of which the date is kept as written."""
    text = value.strip()
    if not re.match(r"^\d{8}", text):
        raise TimestampError(value, "is not a date: expected YYYYMMDD")
    parse_hl7(text, UTC)  # validates the whole value; the date is kept as the sender wrote it
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


_DICOM_DT = re.compile(
    r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?([+-]\d{4})?$"
)


def parse_dicom(da: str, tm: str = "", offset: str = "", *, zone: tzinfo) -> Instant:
    """A DICOM DA (+ optional TM, + optional TimezoneOffsetFromUTC) as one instant.

    Accepts the legacy ACR-NEMA forms too (`YYYY.MM.DD`, `HH:MM:SS`), which older archives still send.
    """
    date_text = da.strip().replace(".", "") if re.match(r"^\d{4}\.\d{2}\.\d{2}$", da.strip()) else da.strip()
    if not re.match(r"^\d{8}$", date_text):
        raise TimestampError(da, "is not a DICOM date (DA): expected YYYYMMDD")
    time_text = tm.strip().replace(":", "")
    return parse_dicom_dt(date_text + time_text + offset.strip(), zone=zone)


def parse_dicom_dt(value: str, *, zone: tzinfo) -> Instant:
    """A DICOM DT: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]; without an offset read in `zone`."""
    text = value.strip()
    match = _DICOM_DT.match(text)
    if match is None:
        raise TimestampError(value, "is not a DICOM date-time (DT): expected YYYYMMDDHHMMSS.FFFFFF&ZZXX")
    *parts, fraction, offset = match.groups()
    return _build(value, parts, fraction, offset, zone)


def stored_utc(moment: datetime) -> datetime:
    """An instant read back from the index as aware UTC: SQLite returns `DateTime(timezone=True)` naive,
    and everything marrowlink stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stored_iso(moment: datetime | None) -> str | None:
    """A stored instant as ISO 8601 with its UTC offset, for JSON answers (None stays None)."""
    return stored_utc(moment).isoformat() if moment is not None else None


def _offset_text(moment: datetime) -> str:
    delta = moment.utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in time: give it a zone (marrowlink stores UTC)")
    return moment


def format_hl7(moment: datetime, zone: tzinfo, precision: Precision = Precision.SECOND) -> str:
    """An HL7 DTM in the site's zone with its offset; a value of day precision or coarser has no offset."""
    local = _aware(moment).astimezone(zone)
    digits = local.strftime("%Y%m%d%H%M%S")[: min(precision, Precision.SECOND)]
    if precision <= Precision.DAY:
        return digits
    if precision == Precision.FRACTION:
        digits += f".{local.microsecond // 100:04d}"
    return digits + _offset_text(local)


def format_instant_hl7(instant: Instant, zone: tzinfo) -> str:
    """An instant back in HL7, in the precision it arrived with."""
    return format_hl7(instant.utc, zone, instant.precision)


@dataclass(frozen=True)
class DicomDateTime:
    """DA, TM and TimezoneOffsetFromUTC of one moment, in the site's zone."""

    date: str
    time: str
    offset: str

    @property
    def datetime(self) -> str:
        """The DT form (AcquisitionDateTime): date, time and offset in one value."""
        return f"{self.date}{self.time}{self.offset}"


def format_dicom(moment: datetime, zone: tzinfo) -> DicomDateTime:
    """DA, TM (to the microsecond when there is one) and the offset, of `moment` on the site's clock."""
    local = _aware(moment).astimezone(zone)
    time = local.strftime("%H%M%S") + (f".{local.microsecond:06d}" if local.microsecond else "")
    return DicomDateTime(local.strftime("%Y%m%d"), time, _offset_text(local))
