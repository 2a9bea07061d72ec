"""DIMSE services of the archive (pynetdicom): the SCP and the C-STORE SCU that forwards results.

Public surface: ``DimseServer`` (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET SCP) and ``forward``.
"""

from dicom_store.dimse.scu import ForwardError, ForwardResult, forward
from dicom_store.dimse.server import DimseServer

__all__ = ["DimseServer", "ForwardError", "ForwardResult", "forward"]
