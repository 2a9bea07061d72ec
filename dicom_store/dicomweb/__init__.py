"""DICOMweb (PS3.18) over the Store: QIDO-RS, WADO-RS (incl. frames, bulkdata, rendered) and STOW-RS.

``dicomweb_app(store, authorize=..., max_request_bytes=...)`` returns an ASGI app to serve at
``/dicomweb``; conformance is described in docs/dicomweb.md.
"""

from dicom_store.dicomweb.app import DicomWebApp, cors, dicomweb_app, internal_error_response
from dicom_store.dicomweb.asgi import Action, Authorize, Denied, allow_all

__all__ = [
    "Action",
    "Authorize",
    "Denied",
    "DicomWebApp",
    "allow_all",
    "cors",
    "dicomweb_app",
    "internal_error_response",
]
