"""Store errors carry the DICOM status a peer should see, so DIMSE and STOW answer the same way.

What a peer sees of a failure that is not its request's fault is an incident id, never the exception:
exception text can carry SQL, paths and class names. `incident` logs the exception under the id.
"""

from __future__ import annotations

import logging
import uuid

log = logging.getLogger("marrowlink.incidents")


def incident(what: str) -> str:
    """Log the exception being handled under a new incident id and return the id for the answer."""
    incident_id = uuid.uuid4().hex[:12]
    log.exception("incident %s: %s", incident_id, what)
    return incident_id


def internal_error(incident_id: str) -> str:
    """The words a peer gets for an unexpected failure: the incident id and where the details are."""
    return f"internal error, incident {incident_id} (see the server log)"  # fits an Error Comment (64)


class StoreError(Exception):
    """Base class; ``status`` is the C-STORE status / STOW-RS FailureReason (PS3.4 Annex B, PS3.18)."""

    status: int = 0x0110  # Processing failure

    def __init__(self, message: str, *, sop_instance_uid: str | None = None, sop_class_uid: str | None = None):
        super().__init__(message)
        self.sop_instance_uid = sop_instance_uid
        self.sop_class_uid = sop_class_uid


class InvalidInstance(StoreError):
    """Not DICOM, truncated, or missing the identifying attributes: 0xC000 Cannot understand."""

    status = 0xC000


class DuplicateInstance(StoreError):
    """An instance with this SOP Instance UID is stored and the policy is reject: 0x0111."""

    status = 0x0111


class OutOfResources(StoreError):
    """The request or the disk is too large for us: 0xA700."""

    status = 0xA700


class NotFound(LookupError):
    """No such study, series, instance or frame."""
