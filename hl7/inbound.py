"""Receiving one message: store raw, de-duplicate, parse, hand to the domain handler, answer.

The order of steps is the durability promise (docs/hl7-interface.md §3.1): the raw message is
committed before anything else, the handler's changes and the ACK are committed in one transaction,
and a message seen again (same sender, same MSH-10) gets the stored ACK with no second side effect.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, tzinfo
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

from hl7.ack import build_ack
from hl7.codes import AckCode, ErrorCode
from hl7.encoding import HeaderError, decode, normalise_segments, read_header
from hl7.model import InboundEvent, MessageHeader
from hl7.parse import MessageError, check_header, parse_body
from hl7.tables import InboundMessage

log = logging.getLogger("marrowlink.hl7")


class InboundHandler(Protocol):
    """What `integration` registers: apply one event inside the session hl7 commits with the ACK.

    Raise `hl7.MessageError` to refuse the event with AE and a reason (e.g. unknown patient on a merge).
    """

    def handle(self, session: Session, event: InboundEvent) -> None: ...


def incident(what: str) -> str:
    """Log the exception being handled under a new incident id and return the id.

    The id is all a sender is told of a failure that is not its message's fault: exception text can carry
    SQL, paths and class names, which stay in the server log, where the same id finds them.
    """
    incident_id = uuid.uuid4().hex[:12]
    log.exception("incident %s: %s", incident_id, what)
    return incident_id


def internal_error(incident_id: str) -> str:
    """ERR-8 of an unexpected failure: the incident id, and where the details are."""
    return f"internal error, incident {incident_id} (details in the receiving system's log); please resend later"


def _headerless_reject(reason: str, zone: tzinfo = UTC) -> str:
    """AR for a frame without a readable MSH: MSA-2 stays empty because there is nothing to echo."""
    header = MessageHeader(control_id="")
    message = build_ack(header, AckCode.REJECT, error_code=ErrorCode.SEGMENT_SEQUENCE, reason=reason, zone=zone)
    return message.to_er7()


class Receiver:
    """Turns one raw frame body into the ER7 answer; synchronous, so servers run it in a thread."""

    def __init__(self, engine: Engine, handler: InboundHandler, *, facility: str = "", zone: tzinfo = UTC) -> None:
        """`zone` is the site's time zone: date/times without an offset are read in it, answers carry it."""
        self.engine = engine
        self.handler = handler
        self.facility = facility
        self.zone = zone

    def receive(self, raw: bytes) -> str:
        """Never raises: whatever happens, a frame with a readable MSH gets an answer."""
        try:
            return self._receive(raw)
        except Exception as exc:
            incident_id = incident("HL7 frame could not be processed")
            try:
                header = read_header(decode(raw)[0])[0]
            except HeaderError:
                return _headerless_reject(internal_error(incident_id), self.zone)
            if isinstance(exc, OperationalError):
                error = MessageError(ErrorCode.RECORD_LOCKED, "database busy, please resend")
            else:
                error = MessageError(ErrorCode.INTERNAL_ERROR, internal_error(incident_id))
            return self._error_ack(header, error)

    def _receive(self, raw: bytes) -> str:
        text, _codec = decode(raw)
        try:
            header, delims = read_header(text)
        except HeaderError as exc:
            log.warning("HL7 frame rejected: %s", exc)
            return _headerless_reject(str(exc), self.zone)
        replay = self._store(header, raw)
        if replay is not None:
            return replay
        try:
            check_header(header)
            event = parse_body(normalise_segments(text), header, delims, self.zone)
        except MessageError as exc:
            return self._finish(header, self._error_ack(header, exc), exc.ack_code, error=exc.reason)
        return self._apply(header, event)

    def _store(self, header: MessageHeader, raw: bytes) -> str | None:
        """Insert the raw message; return the stored ACK when this (sender, MSH-10) was answered."""
        with Session(self.engine) as session:
            row = self._row(session, header)
            if row is not None:
                return row.ack
            session.add(
                InboundMessage(
                    sender=header.sender, control_id=header.control_id, message_type=header.message_type, raw=raw
                )
            )
            try:
                session.commit()
            except IntegrityError:  # the same message on another connection at the same moment
                session.rollback()
                row = self._row(session, header)
                return row.ack if row is not None else None
        return None

    @staticmethod
    def _row(session: Session, header: MessageHeader, *, lock: bool = False) -> InboundMessage | None:
        query = select(InboundMessage).where(
            InboundMessage.sender == header.sender, InboundMessage.control_id == header.control_id
        )
        if lock:  # PostgreSQL: a concurrent delivery of the same message waits here, then replays
            query = query.with_for_update()
        return session.exec(query).first()

    def _error_ack(self, header: MessageHeader, exc: MessageError) -> str:
        return build_ack(
            header,
            exc.ack_code,
            error_code=exc.code,
            reason=exc.reason,
            error_segment=exc.segment,
            error_field=exc.field,
            facility=self.facility,
            zone=self.zone,
        ).to_er7()

    def _apply(self, header: MessageHeader, event: InboundEvent) -> str:
        # SQLite answers a read transaction that turns into a write after another commit with an
        # immediate "database is locked" (no busy wait); a few quick retries absorb that.
        for attempt in range(4):
            try:
                return self._apply_once(header, event)
            except OperationalError as exc:
                if attempt == 3:
                    log.warning("HL7 %s not applied (database): %s", header.control_id, exc)
                    error = MessageError(ErrorCode.RECORD_LOCKED, "database busy, please resend")
                    return self._error_ack(header, error)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _apply_once(self, header: MessageHeader, event: InboundEvent) -> str:
        try:
            with Session(self.engine) as session:
                row = self._row(session, header, lock=True)
                if row is not None and row.ack is not None:
                    return row.ack  # answered meanwhile by a concurrent delivery
                self.handler.handle(session, event)
                ack = build_ack(header, facility=self.facility, zone=self.zone).to_er7()
                if row is not None:
                    row.status, row.ack_code, row.ack = "processed", AckCode.ACCEPT.value, ack
                    session.add(row)
                session.commit()
                return ack
        except MessageError as exc:
            return self._finish(header, self._error_ack(header, exc), exc.ack_code, error=exc.reason)
        except OperationalError:
            # A locked or unreachable database is temporary: retried above, then answered 206 with
            # no ACK kept, so the sender's resend is processed normally.
            raise
        except Exception:
            incident_id = incident(f"HL7 {header.control_id}: handler failed")
            error = MessageError(ErrorCode.INTERNAL_ERROR, internal_error(incident_id))
            return self._finish(header, self._error_ack(header, error), AckCode.ERROR, error=error.reason)

    def _finish(self, header: MessageHeader, ack: str, code: AckCode, *, error: str) -> str:
        """Record a final AE/AR so the same message gets the same answer again."""
        with Session(self.engine) as session:
            row = self._row(session, header)
            if row is not None:
                if row.ack is not None:
                    return row.ack
                row.status, row.ack_code, row.ack, row.error = "rejected", code.value, ack, error
                session.add(row)
                session.commit()
        return ack
