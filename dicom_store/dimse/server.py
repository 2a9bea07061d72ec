"""The DIMSE front-end of the archive: one pynetdicom AE serving Verification, Storage and Q/R.

Built by ``integration.service`` from Settings; tests and benchmarks build it in-process.
"""

from __future__ import annotations

import copy
import logging
import ssl
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from dicom_store.dimse import receive
from dicom_store.dimse.contexts import scp_contexts
from dicom_store.dimse.handlers import Handlers
from dicom_store.store import Store

log = logging.getLogger(__name__)


def quiet_pynetdicom() -> None:
    """pynetdicom logs every association, PDU summary and C-FIND identifier at INFO; our handlers log
    what an operator needs (who stored what, refusals with reasons). Lowered only if nobody set it."""
    library = logging.getLogger("pynetdicom")
    if library.level == logging.NOTSET:
        library.setLevel(logging.WARNING)


def use_chunked_receive() -> None:
    """Stream received C-STORE data sets to a file instead of memory (process-wide pynetdicom switch).

    Measured on this project's machine (docs/architecture.md §7) this mode with an unlimited receive PDU is
    what reaches dcmtk storescp's MB/s; it also keeps a 4 GB WSI out of memory. Our associations write
    that file into the blob store's temp folder (``dicom_store.dimse.receive``).
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    receive.install()


class _CheapCopyContext(PresentationContext):
    """pynetdicom deep-copies the SCP's ~180 presentation contexts for every association (its UIDs
    one by one: ~17 ms of CPU each time, measured). UIDs are immutable: copying the lists is enough."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _CheapCopyContext:
        new = object.__new__(type(self))
        new.__dict__.update({k: list(v) if isinstance(v, list) else v for k, v in self.__dict__.items()})
        return new


def _cheap_copies(contexts: list[PresentationContext]) -> list[PresentationContext]:
    copies = []
    for context in contexts:
        cheap = copy.copy(context)
        if type(cheap) is PresentationContext:
            cheap.__class__ = _CheapCopyContext
        copies.append(cheap)
    return copies


class DimseServer:
    """C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET SCP over a Store.

    Parameters
    ----------
    store:
        Where received instances go and what queries and retrieves read.
    ae_title:
        Our AE title (called AE title is not enforced: peers often use a site-wide title).
    host, port:
        Listening address.
    allowed_aes:
        Calling AE titles accepted; empty accepts any. Others are rejected at association
        (A-ASSOCIATE-RJ permanent, reason 3 "calling AE title not recognized") and logged.
    remote_aes:
        C-MOVE destinations: AE title → (host, port).
    maximum_associations:
        Concurrent associations accepted; more are rejected transiently (local limit exceeded).
    ssl_context:
        Optional server-side TLS (DICOM TLS, PS3.15 B.1); None listens in plain TCP.
    """

    def __init__(
        self,
        store: Store,
        *,
        ae_title: str = "MARROWLINK",
        host: str = "0.0.0.0",
        port: int = 11112,
        allowed_aes: Iterable[str] = (),
        remote_aes: Mapping[str, tuple[str, int]] | None = None,
        maximum_associations: int = 10,
        ssl_context: ssl.SSLContext | None = None,
        network_timeout: float | None = 60,
        dimse_timeout: float | None = 60,
    ) -> None:
        self.store = store
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.allowed_aes = [a.strip() for a in allowed_aes if a.strip()]
        self.remote_aes = dict(remote_aes or {})
        self.ssl_context = ssl_context
        self.handlers = Handlers(store, ae_title, self.remote_aes)
        self.ae = AE(ae_title)
        # Our advertised receive limit is the PDU size senders use: unlimited lets them send a frame
        # per PDU instead of 16 KB slices (needed to match dcmtk's MB/s).
        self.ae.maximum_pdu_size = 0
        self.ae.maximum_associations = maximum_associations
        self.ae.require_calling_aet = self.allowed_aes
        self.ae.network_timeout = network_timeout
        self.ae.dimse_timeout = dimse_timeout
        for context in scp_contexts():
            # add_supported_context keeps the roles; assigning ae.supported_contexts drops them.
            self.ae.add_supported_context(
                context.abstract_syntax, context.transfer_syntax, context.scu_role, context.scp_role
            )
        self._server: ThreadedAssociationServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the real port when constructed with port 0."""
        if self._server is None:
            return self.host, self.port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Listen in background threads and return (one thread per association)."""
        if self._server is not None:
            return
        use_chunked_receive()
        quiet_pynetdicom()
        h = self.handlers
        self._server = self.ae.start_server(
            (self.host, self.port),
            block=False,
            ssl_context=self.ssl_context,
            contexts=_cheap_copies(self.ae.supported_contexts),
            evt_handlers=[
                (evt.EVT_C_ECHO, h.on_echo),
                (evt.EVT_C_STORE, h.on_store),
                (evt.EVT_C_FIND, h.on_find),
                (evt.EVT_C_MOVE, h.on_move),
                (evt.EVT_C_GET, h.on_get),
                (evt.EVT_REJECTED, h.on_rejected),
                (evt.EVT_REQUESTED, h.on_requested),
                (evt.EVT_CONN_OPEN, h.on_opened),
                (evt.EVT_CONN_CLOSE, h.on_closed),
            ],
        )
        log.info(
            "DICOM SCP %s listening on %s:%d (allowed calling AEs: %s; TLS: %s)",
            self.ae_title,
            *self.address,
            ", ".join(self.allowed_aes) or "any",
            "on" if self.ssl_context else "off",
        )

    def stop(self) -> None:
        """Stop listening and end open associations."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server = None
        self.ae.shutdown()

    def __enter__(self) -> DimseServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
