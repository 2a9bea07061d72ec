"""C-STORE SCU: push stored instances to another AE (forward AI results to a PACS).

Instances go out in the transfer syntax they are stored in: we never transcode, so a peer that does
not accept that syntax for the SOP class gets the instance counted as failed, with the reason.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import pydicom
from pynetdicom import AE

from dicom_store.dimse.contexts import send_contexts
from dicom_store.store import Store

log = logging.getLogger(__name__)


class ForwardError(RuntimeError):
    """No association with the destination (refused, rejected, unreachable)."""


@dataclass
class ForwardResult:
    """What the destination answered: stored UIDs, and failed UIDs with status and reason."""

    sent: list[str] = field(default_factory=list)
    warnings: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def forward(
    store: Store,
    sop_instance_uids: Sequence[str],
    destination: tuple[str, int, str],
    *,
    calling_ae_title: str = "MARROWLINK",
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 60,
) -> ForwardResult:
    """C-STORE each instance to ``destination`` = (host, port, AE title) over one association.

    Raises ForwardError when no association can be made; per-instance refusals are in the result.
    """
    host, port, ae_title = destination
    rows = store.instances(sop_instance_uids=list(sop_instance_uids))
    missing = set(sop_instance_uids) - {row.sop_instance_uid for row in rows}
    result = ForwardResult(failed={uid: "not in the archive" for uid in missing})
    if not rows:
        return result
    ae = AE(calling_ae_title)
    ae.network_timeout = ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    contexts = send_contexts((row.sop_class_uid, row.transfer_syntax_uid) for row in rows)
    tls_args = (ssl_context, host) if ssl_context else None
    assoc = ae.associate(host, port, contexts=contexts, ae_title=ae_title, tls_args=tls_args)
    if not assoc.is_established:
        raise ForwardError(f"no association with {ae_title}@{host}:{port} (rejected, aborted or unreachable)")
    try:
        for row in rows:
            uid = row.sop_instance_uid
            try:
                dataset = pydicom.dcmread(store.blobs.absolute(row.path))
                answer = assoc.send_c_store(dataset)
            except Exception as exc:  # no accepted context for this class/syntax, or I/O
                result.failed[uid] = f"not sent: {exc}"
                continue
            code = int(answer.get("Status", 0xFFFF)) if answer else None
            if code is None:
                result.failed[uid] = "no response (association aborted or timed out)"
                if not assoc.is_established:
                    break
            elif code == 0x0000:
                result.sent.append(uid)
            elif code & 0xF000 == 0xB000:
                result.sent.append(uid)
                result.warnings[uid] = code
            else:
                comment = answer.get("ErrorComment", "")
                result.failed[uid] = f"status 0x{code:04X} {comment}".strip()
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("forwarded %d/%d instances to %s", len(result.sent), len(sop_instance_uids), ae_title)
    return result
