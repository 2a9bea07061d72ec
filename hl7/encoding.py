"""Reading raw HL7 bytes: charsets, segment terminators, the MSH header, escape sequences.

The header reader is deliberately tolerant and independent of hl7apy: a message whose body or encoding
characters hl7apy rejects must still be answered (MSA-2 = its MSH-10) and de-duplicated, which is the
failure mode of docs/hl7-interface.md §8 (Mirth's tracker) (`|^^|` crashing ACK generation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hl7.model import MessageHeader

#: HL7 table 0211 (MSH-18) values we decode, mapped to Python codecs.
CHARSETS = {
    "": "utf-8",  # strictly ASCII by the standard; UTF-8 is a superset and what senders really send
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-8",
}

OUTBOUND_CHARSET = "UNICODE UTF-8"
_LINE_BREAKS = re.compile(r"\r\n|\n|\r")


class HeaderError(ValueError):
    """The frame has no readable MSH or no control id: nothing we could acknowledge."""


@dataclass(frozen=True)
class Delimiters:
    """MSH-1 and MSH-2; a message may legally choose other characters than `|^~\\&`."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def distinct(self) -> bool:
        chars = [self.field, self.component, self.repetition, self.escape, self.subcomponent]
        return all(chars) and len(set(chars)) == len(chars) and not any(c.isalnum() or c in "\r\n" for c in chars)


STANDARD = Delimiters()


def normalise_segments(text: str) -> str:
    """CR is the segment terminator; senders also use LF and CRLF, and trailing breaks are noise."""
    return _LINE_BREAKS.sub("\r", text).strip("\r\n ")


def decode(raw: bytes) -> tuple[str, str]:
    """Text and the codec used: MSH-18 names the charset; undeclared bytes fall back to Latin-1."""
    head = raw[: raw.find(b"\r") if b"\r" in raw else None].decode("latin-1")
    charset = ""
    if head.startswith("MSH") and len(head) > 3:
        fields = head.split(head[3])
        if len(fields) > 17:
            charset = fields[17].split(head[4] if len(head) > 4 else "^")[0].strip().upper()
    codec = CHARSETS.get(charset, "utf-8")
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def first_segment(text: str) -> str:
    """The first segment as `normalise_segments(text).split("\\r", 1)[0]` gives it, without rewriting the
    whole message: the header is read on every hop of an 11 kB ORU (enqueue, the peer, the ACK)."""
    text = text.lstrip("\r\n ")
    end = min((i for i in (text.find("\r"), text.find("\n")) if i >= 0), default=len(text))
    if text and text[-1] in "\r\n ":  # trailing blanks: only a lone segment loses its own
        end = min(end, len(text.rstrip("\r\n ")))
    return text[:end]


def delimiters_of(msh: str) -> Delimiters:
    """The delimiters an MSH declares; missing ones default to the standard characters."""
    if len(msh) < 4:
        raise HeaderError("MSH segment too short to declare its field separator")
    field_sep = msh[3]
    enc = msh[4:].split(field_sep, 1)[0]
    chars = [*enc[:4], *"^~\\&"[len(enc[:4]) :]]
    return Delimiters(field_sep, chars[0], chars[1], chars[2], chars[3])


def read_header(text: str) -> tuple[MessageHeader, Delimiters]:
    """MSH read by hand: works for odd encoding characters, non-standard versions and broken bodies."""
    msh = first_segment(text)
    if not msh.startswith("MSH"):
        raise HeaderError("message does not start with an MSH segment")
    delims = delimiters_of(msh)
    fields = msh.split(delims.field)
    # fields[0] = "MSH", fields[1] = MSH-2, so MSH-n is fields[n - 1] (MSH-1 is the separator itself).

    def get(n: int, component: int = 1) -> str:
        value = fields[n - 1] if len(fields) > n - 1 else ""
        if delims.component and delims.component != delims.field:
            parts = value.split(delims.component)
            value = parts[component - 1] if len(parts) >= component else ""
        elif component > 1:
            value = ""
        return unescape(value, delims).strip()

    control_id = get(10) if len(fields) > 9 else ""
    if not control_id:
        control_id = fields[9].strip() if len(fields) > 9 else ""
    if not control_id:
        raise HeaderError("MSH-10 (message control id) is empty")
    header = MessageHeader(
        control_id=control_id,
        sending_application=get(3),
        sending_facility=get(4),
        receiving_application=get(5),
        receiving_facility=get(6),
        timestamp=get(7),
        message_code=get(9, 1).upper(),
        trigger_event=get(9, 2).upper(),
        processing_id=get(11) or "P",
        version=get(12),
        charset=get(18),
    )
    return header, delims


def segments(text: str, delims: Delimiters = STANDARD) -> list[list[str]]:
    """Segments split into fields: enough to read an ACK's MSA/ERR without hl7apy's cost."""
    return [seg.split(delims.field) for seg in normalise_segments(text).split("\r") if seg]


_ESCAPES = ("F", "S", "T", "R", "E")


def escape(value: str, delims: Delimiters = STANDARD) -> str:
    """HL7 escape sequences for delimiter characters inside a text value (v2.5.1 §2.7)."""
    mapping = {
        delims.escape: f"{delims.escape}E{delims.escape}",
        delims.field: f"{delims.escape}F{delims.escape}",
        delims.component: f"{delims.escape}S{delims.escape}",
        delims.subcomponent: f"{delims.escape}T{delims.escape}",
        delims.repetition: f"{delims.escape}R{delims.escape}",
    }
    return "".join(mapping.get(ch, ch) for ch in value).replace("\r", " ").replace("\n", " ")


def unescape(value: str, delims: Delimiters = STANDARD) -> str:
    """The inverse of `escape`; unknown sequences (formatting, hex) are kept as they are."""
    esc = delims.escape
    if not esc or esc not in value:
        return value
    chars = {
        "F": delims.field,
        "S": delims.component,
        "T": delims.subcomponent,
        "R": delims.repetition,
        "E": delims.escape,
    }
    pattern = re.compile(re.escape(esc) + r"([FSTRE])" + re.escape(esc))
    return pattern.sub(lambda m: chars[m.group(1)], value)
