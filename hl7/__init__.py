"""hl7: HL7 v2 orders in and ORU^R01 results out over MLLP, with a durable outbox.

Research use only, not for clinical diagnosis. This package never imports `integration`: it takes an
engine, a handler (`InboundHandler`) and plain settings as arguments (docs/architecture.md §2).
"""

from acquisition import CELL_CLASSES
from hl7.ack import AckReply, build_ack, new_control_id, read_ack
from hl7.codes import VERIFIED_LOINC, AckCode, ErrorCode
from hl7.inbound import InboundHandler, Receiver
from hl7.mllp import FrameDecoder, MllpConnection, MllpServer, frame, send_message
from hl7.model import (
    DifferentialResult,
    InboundEvent,
    MessageHeader,
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
)
from hl7.oru import build_oru
from hl7.outbox import Outbox, OutboxDispatcher, OutboxSender, Queued, RetryPolicy
from hl7.parse import MessageError, parse_message
from hl7.standin import LisStandIn
from hl7.tables import InboundMessage, OutboxMessage

__all__ = [
    "CELL_CLASSES",
    "VERIFIED_LOINC",
    "AckCode",
    "AckReply",
    "DifferentialResult",
    "ErrorCode",
    "FrameDecoder",
    "InboundEvent",
    "InboundHandler",
    "InboundMessage",
    "LisStandIn",
    "MessageError",
    "MessageHeader",
    "Method",
    "MllpConnection",
    "MllpServer",
    "Order",
    "OruCase",
    "Outbox",
    "OutboxDispatcher",
    "OutboxMessage",
    "OutboxSender",
    "Patient",
    "PatientId",
    "PatientMerge",
    "PatientUpdate",
    "PersonName",
    "Provider",
    "Queued",
    "Receiver",
    "ResultStatus",
    "RetryPolicy",
    "build_ack",
    "build_oru",
    "frame",
    "new_control_id",
    "parse_message",
    "read_ack",
    "send_message",
]
