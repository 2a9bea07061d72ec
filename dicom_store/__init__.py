"""dicom_store: the DICOM archive alone: blob store, SQL index, DICOMweb, DIMSE.

Public surface: `Store` (store/get/frames/search), its errors, and the query levels. Protocol
front-ends (DICOMweb, DIMSE) are thin layers over `Store`.
"""

from dicom_store.errors import DuplicateInstance, InvalidInstance, NotFound, OutOfResources, StoreError
from dicom_store.query import Level, Query, UnsupportedQuery, parse_query
from dicom_store.store import DuplicatePolicy, FrameSource, Outcome, Store, StoredInstance


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    """``DimseServer`` on first use only: importing pynetdicom is not free, and most users of the store need none."""
    if name == "DimseServer":
        from dicom_store.dimse import DimseServer

        return DimseServer
    if name == "dicomweb_app":  # Starlette and the codecs load only when the HTTP service is built
        from dicom_store.dicomweb import dicomweb_app

        return dicomweb_app
    raise AttributeError(f"module 'dicom_store' has no attribute {name!r}")


__all__ = [
    "DimseServer",
    "DuplicateInstance",
    "DuplicatePolicy",
    "FrameSource",
    "InvalidInstance",
    "Level",
    "NotFound",
    "OutOfResources",
    "Outcome",
    "Query",
    "Store",
    "StoreError",
    "StoredInstance",
    "UnsupportedQuery",
    "dicomweb_app",
    "parse_query",
]
