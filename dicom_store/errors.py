"""Store errors carry the DICOM status a peer should see, so DIMSE and STOW answer the same way."""

from __future__ import annotations


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
