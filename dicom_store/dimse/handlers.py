"""pynetdicom event handlers: each translates one DIMSE request into Store calls and back.

Handlers stay thin: storing, matching and reading belong to ``Store``; the shape of
identifiers to ``identifiers``. What is here is the DIMSE side only — statuses, Error Comments,
pending responses, cancellation.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pynetdicom.events import Event

from dicom_store.dimse import identifiers, receive
from dicom_store.dimse.contexts import NATIVE_SYNTAXES, held_syntaxes, prefer_held_syntaxes, send_contexts
from dicom_store.errors import StoreError, incident, internal_error
from dicom_store.models import Instance
from dicom_store.store import Store

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WITH_UNSUPPORTED_KEYS = 0xFF01
CANCEL = 0xFE00
PROCESSING_FAILURE = 0x0110
MOVE_DESTINATION_UNKNOWN = 0xA801
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702


def error_comment(reason: str) -> str:
    """Error Comment (0000,0902) is LO in the command set: ASCII (default repertoire), 64 chars at most.

    Long reasons lose their quoted values and UIDs first (the peer knows which instance it sent; the
    full reason is in our log), so what is left still says why.
    """
    text = reason.replace("§", "sect. ").encode("ascii", "replace").decode().replace("\\", "/")
    if len(text) > 64:
        text = re.sub(r"\s*'[^']*'", "", text)
        text = re.sub(r"\s*\b[0-9]+(\.[0-9]+){3,}\b", "", text)
    return text if len(text) <= 64 else text[:61] + "..."


def status(code: int, reason: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = error_comment(reason)
    return ds


def _peer(event: Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"


def _amend_final_response(event: Event, code: int, reason: str) -> None:
    """Make pynetdicom's next response to this request carry ``code`` and ``reason``.

    pynetdicom 3.0.4 answers a C-MOVE to an unknown destination (and a C-GET/C-MOVE that yields no
    sub-operations) itself, without a way for the handler to add the Error Comment PS3.4 C.4.2.1.5
    asks for; so the one response is amended on its way out. One association handles one request at
    a time (no asynchronous operations are negotiated), so the one-shot patch cannot catch another
    request's message.
    """
    dimse = event.assoc.dimse
    original = dimse.send_msg
    message_id = event.request.MessageID

    def send_msg(primitive: Any, context_id: int) -> None:
        if getattr(primitive, "MessageIDBeingRespondedTo", None) == message_id:
            del dimse.send_msg
            primitive.Status = code
            primitive.ErrorComment = error_comment(reason)
        original(primitive, context_id)

    dimse.send_msg = send_msg


class Handlers:
    """The SCP's behaviour, bound to one Store and one AE's configuration."""

    def __init__(self, store: Store, ae_title: str, remote_aes: Mapping[str, tuple[str, int]]) -> None:
        self.store = store
        self.ae_title = ae_title
        self.remote_aes = dict(remote_aes)

    # ---- association ------------------------------------------------------------------------------------

    def on_requested(self, event: Event) -> None:
        """Before negotiation: a C-GET requestor (it asks for the Storage SCP role) gets, per storage
        class, the transfer syntax we hold that class in, since we send instances as stored."""
        receiving = [uid for uid, item in event.assoc.requestor.role_selection.items() if item.scp_role]
        if not receiving:
            return
        try:
            held = held_syntaxes(self.store, receiving)
        except Exception:
            log.exception("cannot look up stored transfer syntaxes; negotiating with the default order")
            return
        prefer_held_syntaxes(event.assoc.acceptor.supported_contexts, held)

    def on_rejected(self, event: Event) -> None:
        allowed = event.assoc.ae.require_calling_aet
        calling = event.assoc.requestor.ae_title
        if allowed and calling not in allowed:
            reason = f"calling AE title {calling!r} is not on the allowlist"
        else:
            reason = "local limit on concurrent associations reached"
        log.warning("association from %s rejected: %s", _peer(event), reason)

    def on_opened(self, event: Event) -> None:
        """Before the association's reactor runs: PDUs read in one piece, data sets received into the
        blob store's temp folder (``receive.prepare``)."""
        receive.prepare(event.assoc, self.store.blobs.tmp)

    def on_closed(self, event: Event) -> None:
        """Remove the partial file of a C-STORE cut off mid-transfer (sender killed, network lost).

        pynetdicom 3.0.4 deletes the chunked-receive file only after the handler ran, so a data set
        that never completed would stay in the temp folder for good.
        """
        message = getattr(getattr(event.assoc, "dimse", None), "message", None)
        partial = getattr(message, "_data_set_file", None)
        if partial is None:
            return
        if not receive.discard(partial):
            return
        log.warning("connection from %s closed during a C-STORE; partial data set discarded", _peer(event))

    # ---- services -----------------------------------------------------------------------------------------

    def on_echo(self, event: Event) -> int:
        return SUCCESS

    def on_store(self, event: Event) -> int | Dataset:
        """Hand pynetdicom's received Part-10 file to the Store, which takes it over (no copy).

        In chunked receive mode pynetdicom 3.0.4 writes preamble, File Meta (Media Storage UIDs from
        the C-STORE command, Transfer Syntax from the accepted context) and the data set as sent,
        so the file is stored without decoding the data set; it is received straight into the blob
        store's temp folder (``receive``), so the Store uses it in place, named from the request's
        Affected SOP Instance UID. The response goes out when this returns, i.e. after the Store's
        fsync and index commit.
        """
        try:
            result = self.store.store_received(event.dataset_path, str(event.request.AffectedSOPInstanceUID or ""))
        except StoreError as exc:
            log.warning("C-STORE from %s refused (0x%04X): %s", _peer(event), exc.status, exc)
            return status(exc.status, str(exc))
        except Exception:
            return status(PROCESSING_FAILURE, internal_error(incident(f"C-STORE from {_peer(event)} failed")))
        log.info("C-STORE from %s: %s %s", _peer(event), result.sop_instance_uid, result.outcome)
        return SUCCESS

    def on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        sop_class = str(event.request.AffectedSOPClassUID)
        try:
            identifier = event.identifier
            level = identifiers.request_level(identifier, sop_class)
            all_keys_supported, responses = identifiers.find(self.store, level, identifier, sop_class, self.ae_title)
        except identifiers.IdentifierError as exc:
            log.warning("C-FIND from %s refused: %s", _peer(event), exc)
            yield status(exc.status, str(exc)), None
            return
        except Exception:
            yield status(0xC000, internal_error(incident(f"C-FIND from {_peer(event)} failed"))), None
            return
        pending = PENDING if all_keys_supported else PENDING_WITH_UNSUPPORTED_KEYS
        for count, response in enumerate(responses):
            if count % 32 == 31:
                # pynetdicom's DUL thread reads incoming PDUs (a C-CANCEL) only when it is not busy
                # sending; a producer that never pauses keeps it sending, and a cancel was seen only
                # after every match had gone out on an idle machine. A millisecond now and then lets
                # it read.
                time.sleep(0.001)
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield pending, response

    def on_move(self, event: Event) -> Iterator[Any]:
        destination = str(event.move_destination).strip()
        address = self.remote_aes.get(destination)
        if address is None:
            reason = f"move destination {destination!r} is not a configured remote AE"
            log.warning("C-MOVE from %s refused: %s", _peer(event), reason)
            _amend_final_response(event, MOVE_DESTINATION_UNKNOWN, reason)
            yield None, None
            return
        instances = self._retrieve(event)
        if instances is None:
            yield None, None
            return
        try:
            contexts = send_contexts((row.sop_class_uid, row.transfer_syntax_uid) for row in instances)
        except ValueError as exc:
            _amend_final_response(event, OUT_OF_RESOURCES_SUBOPERATIONS, str(exc))
            yield None, None
            return
        log.info("C-MOVE from %s: %d instances to %s", _peer(event), len(instances), destination)
        yield address[0], address[1], {"contexts": contexts}
        yield len(instances)
        yield from self._sub_operations(event, instances)

    def on_get(self, event: Event) -> Iterator[Any]:
        instances = self._retrieve(event)
        if instances is None:
            yield 0
            return
        log.info("C-GET from %s: %d instances", _peer(event), len(instances))
        yield len(instances)
        yield from self._sub_operations(event, instances)

    # ---- retrieve helpers --------------------------------------------------------------------------------

    def _retrieve(self, event: Event) -> list[Instance] | None:
        """The matched instances, or None after arranging a refusal with the reason."""
        try:
            identifier = event.identifier
            level = identifiers.request_level(identifier, str(event.request.AffectedSOPClassUID))
            return identifiers.retrieve(self.store, level, identifier)
        except identifiers.IdentifierError as exc:
            code, reason = exc.status, str(exc)
        except Exception:
            code, reason = 0xC000, internal_error(incident(f"retrieve from {_peer(event)} failed"))
        log.warning("retrieve from %s refused: %s", _peer(event), reason)
        _amend_final_response(event, code, reason)
        return None

    def _sub_operations(self, event: Event, instances: list[Instance]) -> Iterator[tuple[int, Dataset | None]]:
        """One instance at a time, read as stored (pynetdicom sends it in its stored transfer syntax)."""
        for row in instances:
            if event.is_cancelled:
                yield CANCEL, None
                return
            try:
                dataset = pydicom.dcmread(self.store.blobs.absolute(row.path))
                if event.event.name == "EVT_C_GET":
                    _fit_to_accepted(event, dataset)
            except Exception as exc:
                log.error("cannot read %s for a sub-operation: %s", row.sop_instance_uid, exc)
                # A dataset pynetdicom cannot send counts as one failed sub-operation and keeps its UID
                # in the Failed SOP Instance UID List.
                dataset = Dataset()
                dataset.SOPInstanceUID = row.sop_instance_uid
            yield PENDING, dataset


def _fit_to_accepted(event: Event, dataset: Dataset) -> None:
    """Decompress an encapsulated instance when the C-GET peer accepted only native syntaxes for its class.

    Sending as stored is the rule; this is the fallback that keeps a mixed study retrievable by a
    peer that proposed one context per class (the reverse, compressing, is never done).
    """
    syntax = str(dataset.file_meta.TransferSyntaxUID)
    accepted = {
        str(cx.transfer_syntax[0])
        for cx in event.assoc.accepted_contexts
        if cx.abstract_syntax == dataset.SOPClassUID and cx.as_scu
    }
    if syntax in accepted or syntax in NATIVE_SYNTAXES or not accepted & set(NATIVE_SYNTAXES):
        return
    log.info("decompressing %s (%s) for a peer that accepted only native syntaxes", dataset.SOPInstanceUID, syntax)
    dataset.decompress()
