"""Media types, transfer syntaxes and Accept negotiation (PS3.18 §8.7).

Viewers send the same Accept header for every frame, so a parsed header is cached: negotiation on
the hot path is one dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
#: Syntaxes whose Pixel Data is native (not encapsulated): one transcodes to the other without a codec.
UNCOMPRESSED = frozenset({EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_LE})

#: PS3.18 Table 8.7.3-5 / 8.7.3-6: the bulk (frame) media type of each encapsulated transfer syntax.
_SYNTAX_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
#: Default transfer syntax of each bulk media type when the client names none (PS3.18 Table 8.7.3-5).
_MEDIA_DEFAULT_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/jxl": "1.2.840.10008.1.2.4.110",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "application/octet-stream": EXPLICIT_VR_LE,
}


def bulk_media_type(transfer_syntax_uid: str) -> str:
    """The media type a frame in this syntax is sent as; native frames are application/octet-stream."""
    return _SYNTAX_MEDIA.get(transfer_syntax_uid, "application/octet-stream")


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header: ``multipart/related; type="image/jpeg"; transfer-syntax=*``."""

    media_type: str  # e.g. multipart/related, image/png, */*
    type: str | None  # the multipart's type parameter
    transfer_syntax: str | None
    q: float

    @property
    def part_type(self) -> str:
        """The media type of each part (or of the single body when not multipart)."""
        if self.media_type == "multipart/related":
            return self.type or "*/*"
        return self.media_type


def _split_params(text: str) -> list[str]:
    out, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return out


def _split_ranges(header: str) -> list[str]:
    out, current, quoted = [], [], False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(char)
    out.append("".join(current))
    return [item for item in out if item.strip()]


@lru_cache(maxsize=256)
def parse_accept(header: str | None) -> tuple[MediaRange, ...]:
    """Media ranges in the client's order of preference (q descending, then as written)."""
    if not header or not header.strip():
        return (MediaRange("*/*", None, None, 1.0),)
    ranges = []
    for index, item in enumerate(_split_ranges(header)):
        pieces = _split_params(item)
        media_type = pieces[0].strip().lower()
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip().strip('"').strip()
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        part_type = params.get("type")
        ranges.append(
            (
                -q,
                index,
                MediaRange(media_type, part_type.lower() if part_type else None, params.get("transfer-syntax"), q),
            )
        )
    ranges.sort(key=lambda item: (item[0], item[1]))
    return tuple(item[2] for item in ranges if item[2].q > 0)


def type_matches(pattern: str, media_type: str) -> bool:
    """``image/*`` matches ``image/jpeg``; ``*/*`` matches everything."""
    if pattern in ("*/*", "*", media_type):
        return True
    major, _, minor = pattern.partition("/")
    return minor == "*" and media_type.startswith(major + "/")


def syntax_acceptable(requested: str | None, media_type: str, stored: str) -> bool:
    """Whether bytes stored in ``stored`` may be sent for this media range without transcoding.

    An absent transfer-syntax parameter means the media type's default (PS3.18 §8.7.3.5.2); for
    application/octet-stream that is Explicit VR Little Endian, i.e. uncompressed.
    """
    if requested == "*":
        return True
    if requested is None:
        if media_type in ("*/*", "*", "image/*", "application/*"):
            return True
        default = _MEDIA_DEFAULT_SYNTAX.get(media_type)
        if media_type == "application/octet-stream":
            return stored in UNCOMPRESSED
        return default == stored or (media_type == bulk_media_type(stored) and media_type != "application/octet-stream")
    if requested == stored:
        return True
    return requested in UNCOMPRESSED and stored in UNCOMPRESSED


@dataclass(frozen=True)
class FrameAnswer:
    """How to answer a frames request: stored bytes as they are, or decoded to native pixels."""

    multipart: bool
    content_type: str  # of each part (multipart) or of the body (single part)
    decode: bool


OCTET = "application/octet-stream"


@lru_cache(maxsize=512)
def negotiate_frames(accept: str | None, stored: str, single: bool) -> FrameAnswer | None:
    """Pick the answer for ``frames/{list}``; None means 406 Not Acceptable.

    Stored compressed bytes go out untouched whenever the client accepts the stored syntax
    (``transfer-syntax=*`` included); uncompressed octet-stream from a compressed instance is decoded.
    """
    stored_media = bulk_media_type(stored)
    stored_answer = f"{stored_media}; transfer-syntax={stored}"
    for item in parse_accept(accept):
        multipart = item.media_type in ("multipart/related", "*/*", "*")
        if not multipart and not single:
            continue
        part = item.part_type
        wanted = item.transfer_syntax
        if part == OCTET and (wanted == "*" or wanted == stored or (wanted is None and stored in UNCOMPRESSED)):
            return FrameAnswer(multipart, f"{OCTET}; transfer-syntax={stored}", False)
        if part == OCTET and stored in UNCOMPRESSED and wanted in UNCOMPRESSED:
            return FrameAnswer(multipart, f"{OCTET}; transfer-syntax={wanted}", False)
        if type_matches(part, stored_media) and syntax_acceptable(wanted, part, stored):
            return FrameAnswer(multipart, stored_answer, False)
        if part in (OCTET, "*/*", "application/*") and wanted in (None, EXPLICIT_VR_LE, IMPLICIT_VR_LE):
            return FrameAnswer(multipart, f"{OCTET}; transfer-syntax={wanted or EXPLICIT_VR_LE}", True)
    return None


@lru_cache(maxsize=256)
def negotiate_instance(accept: str | None, stored: str) -> tuple[bool, str] | None:
    """For whole-instance retrieve: (multipart?, transfer syntax to send) or None for 406.

    Transcoding is offered only between the uncompressed little-endian syntaxes; an absent
    transfer-syntax parameter is answered with the stored syntax (named in each part's Content-Type),
    which is what viewers expect and what the part header makes unambiguous.
    """
    for item in parse_accept(accept):
        multipart = item.media_type in ("multipart/related", "*/*", "*")
        part = item.part_type if multipart else item.media_type
        if not type_matches(part, "application/dicom"):
            continue
        wanted = item.transfer_syntax
        if wanted in (None, "*", stored):
            return multipart, stored
        if wanted in UNCOMPRESSED and stored in UNCOMPRESSED:
            return multipart, wanted
    return None
