"""Acknowledgments: building ACK/ORL answers (hl7apy) and reading the answers our outbox receives.

Answers are always built in v2.5.1 with standard delimiters from whatever header fields could be read,
so a sender with odd encoding characters still gets MSA-2 = its MSH-10 (docs/hl7-interface.md §8).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from hl7apy.core import Message

from acquisition.timestamps import format_hl7
from hl7.codes import ERROR_TEXT, OUTPUT_VERSION, RESPONSES, AckCode, ErrorCode
from hl7.encoding import (
    OUTBOUND_CHARSET,
    STANDARD,
    HeaderError,
    delimiters_of,
    escape,
    first_segment,
    segments,
    unescape,
)
from hl7.model import MessageHeader

APPLICATION = "MARROWLINK"


def new_control_id() -> str:
    """MSH-10: 20 characters (the 2.5.1 length of ST in MSH-10), unique without coordination."""
    return "ML" + uuid.uuid4().hex[:18].upper()


def hl7_now(zone: tzinfo = UTC) -> str:
    """MSH-7: now on the site's clock, with its offset."""
    return format_hl7(datetime.now(UTC), zone)


def fill_msh(
    message: Message,
    *,
    code: str,
    trigger: str,
    structure: str,
    control_id: str,
    receiving_application: str = "",
    receiving_facility: str = "",
    sending_facility: str = "",
    processing_id: str = "P",
    zone: tzinfo = UTC,
) -> None:
    """The MSH fields every message we send carries (MSH-1/2 and MSH-12 come from hl7apy)."""
    msh = message.msh
    msh.msh_3.hd_1.value = APPLICATION
    if sending_facility:
        msh.msh_4.hd_1.value = escape(sending_facility)
    if receiving_application:
        msh.msh_5.hd_1.value = escape(receiving_application)
    if receiving_facility:
        msh.msh_6.hd_1.value = escape(receiving_facility)
    msh.msh_7.ts_1.value = hl7_now(zone)
    msh.msh_9.msg_1.value = code
    msh.msh_9.msg_2.value = trigger
    msh.msh_9.msg_3.value = structure
    msh.msh_10.value = control_id
    msh.msh_11.pt_1.value = processing_id if processing_id in ("P", "T", "D") else "P"
    msh.msh_18.value = OUTBOUND_CHARSET


def build_ack(
    header: MessageHeader,
    ack_code: AckCode = AckCode.ACCEPT,
    *,
    error_code: ErrorCode | None = None,
    reason: str = "",
    error_segment: str = "",
    error_field: int = 0,
    facility: str = "",
    zone: tzinfo = UTC,
) -> Message:
    """ACK, ORL^O22 or ORL^O34 answering `header`, with an ERR segment when not AA."""
    code, trigger, structure = RESPONSES.get(
        (header.message_code, header.trigger_event), ("ACK", header.trigger_event, "ACK")
    )
    message = Message(structure, version=OUTPUT_VERSION)
    fill_msh(
        message,
        code=code,
        trigger=trigger,
        structure=structure,
        control_id=new_control_id(),
        receiving_application=header.sending_application,
        receiving_facility=header.sending_facility,
        sending_facility=facility,
        processing_id=header.processing_id,
        zone=zone,
    )
    message.msa.msa_1.value = ack_code.value
    message.msa.msa_2.value = escape(header.control_id)
    if ack_code is not AckCode.ACCEPT:
        error_code = error_code or ErrorCode.INTERNAL_ERROR
        err = message.add_segment("ERR")
        if error_segment:
            err.err_2.erl_1.value = error_segment
            err.err_2.erl_2.value = "1"
            if error_field:
                err.err_2.erl_3.value = str(error_field)
        err.err_3.cwe_1.value = error_code.value
        err.err_3.cwe_2.value = escape(ERROR_TEXT[error_code])
        err.err_3.cwe_3.value = "HL70357"
        err.err_4.value = "E"
        err.err_8.value = escape(reason or ERROR_TEXT[error_code])
    return message


@dataclass(frozen=True)
class AckReply:
    """What an answer to one of our messages says: enough to decide sent / held / retry."""

    code: str  # MSA-1: AA/AE/AR (or CA/CE/CR in enhanced mode)
    control_id: str  # MSA-2
    error_code: str = ""  # ERR-3.1 (2.5+) or ERR-1.4.1 (2.3/2.4)
    error_text: str = ""
    text: str = ""  # the whole answer, kept in the outbox row

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")

    @property
    def temporary(self) -> bool:
        """ERR-3 206 "application record locked": the peer asks us to try again later."""
        return self.error_code == ErrorCode.RECORD_LOCKED.value


def read_ack(text: str) -> AckReply | None:
    """MSA and ERR read without hl7apy (the sender's hot path); None when there is no MSA.

    Only MSH-1/MSH-2 are read from the header: the rest of it does not decide anything here.
    """
    msh = first_segment(text)
    try:
        delims = delimiters_of(msh) if msh.startswith("MSH") else STANDARD
    except HeaderError:
        delims = STANDARD
    segs = segments(text, delims)
    msa = next((s for s in segs if s[0] == "MSA"), None)
    if msa is None or len(msa) < 3:
        return None
    err = next((s for s in segs if s[0] == "ERR"), None)
    error_code = error_text = ""
    if err is not None:
        if len(err) > 3 and err[3]:
            error_code = err[3].split(delims.component)[0]
        elif len(err) > 1:  # 2.3/2.4: ERR-1 = segment^sequence^field^code&text
            parts = err[1].split(delims.component)
            error_code = parts[3].split(delims.subcomponent)[0] if len(parts) > 3 else ""
        error_text = err[8] if len(err) > 8 else (msa[3] if len(msa) > 3 else "")
    elif len(msa) > 3:
        error_text = msa[3]
    return AckReply(
        msa[1].strip(), unescape(msa[2].strip(), delims), error_code.strip(), unescape(error_text, delims), text
    )
