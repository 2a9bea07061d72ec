"""dicom_store: the DICOM archive (blob store, SQL index, DICOMweb, DIMSE) and result writers.

Public surface: `Store` (store/get/frames/search), its errors, and the query levels. Protocol
front-ends (DICOMweb, DIMSE) are thin layers over `Store`.
"""

from dicom_store.errors import DuplicateInstance, InvalidInstance, NotFound, OutOfResources, StoreError
from dicom_store.query import Level, Query, UnsupportedQuery, parse_query
from dicom_store.store import DuplicatePolicy, FrameSource, Outcome, Store, StoredInstance

__all__ = [
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
    "parse_query",
]
