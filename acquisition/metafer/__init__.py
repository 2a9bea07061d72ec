"""The Metafer export folder: one documented layout (docs/metafer-export.md), one reader, one writer.

`format` holds the names, the manifest model and the error; `reader` validates a folder into a
`ScanManifest`; `writer` writes images and a `ScanManifest` back as a folder; `csv` is the manifest as
one table. The virtual Metafer (`acquisition.simulator`) writes through `writer` like any producer.
"""

from acquisition.metafer.format import (
    CSV_MANIFEST_NAME,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    Equipment,
    ManifestImage,
    MetaferExportError,
    Objective,
    ScanManifest,
)
from acquisition.metafer.reader import read_metafer_export

__all__ = [
    "CSV_MANIFEST_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Equipment",
    "ManifestImage",
    "MetaferExportError",
    "Objective",
    "ScanManifest",
    "read_metafer_export",
]
