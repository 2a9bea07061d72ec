"""DICOM JSON (PS3.18 §F.2) with binary values as BulkDataURIs, and a cache of per-instance metadata.

pydicom's own ``to_json_dict`` hands a bulk-data callback only the element, not where it sits in
nested sequences, so sequences are walked here and each binary element gets a path-addressed URI
(``bulkdata/00660016`` or ``bulkdata/006A0002/0/00660016``). Binary values are never sent as
(possibly truncated) ``Value`` arrays — the Orthanc pitfall that crashed DMV on ANN coordinates.

Metadata is cached as bytes with a placeholder for the base URL, so one cached entry serves
requests that arrive through different hosts or proxies.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr

#: VRs whose values are bytes or binary numbers (PS3.18 §F.2.3: BulkDataURI or InlineBinary).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PLACEHOLDER = "@@MARROWLINK_BASE@@"
_PLACEHOLDER_BYTES = PLACEHOLDER.encode()


def instance_path(study: str, series: str, instance: str) -> str:
    return f"/studies/{study}/series/{series}/instances/{instance}"


def dataset_to_json(ds: Dataset, bulk_prefix: str | None, threshold: int = 0, _path: str = "") -> dict[str, Any]:
    """DICOM JSON of ``ds``; binary values longer than ``threshold`` become ``bulk_prefix/path`` URIs.

    With ``bulk_prefix`` None binary values are sent inline (InlineBinary) — used for QIDO and
    STOW responses that carry no bulk data.
    """
    out: dict[str, Any] = {}
    for element in ds:
        tag = f"{element.tag:08X}"
        vr = element.VR
        if " or " in vr:  # still ambiguous after correction: take the first, as pydicom's writer does
            vr = vr.split(" or ")[0]
            element.VR = vr
        if vr == "SQ":
            items = [
                dataset_to_json(item, bulk_prefix, threshold, f"{_path}{tag}/{index}/")
                for index, item in enumerate(element.value or [])
            ]
            out[tag] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        elif vr in BINARY_VRS and bulk_prefix is not None:
            value = element.value
            if value is None or len(value) == 0:
                out[tag] = {"vr": vr}
            elif len(value) > threshold:
                out[tag] = {"vr": vr, "BulkDataURI": f"{bulk_prefix}/{_path}{tag}"}
            else:
                out[tag] = element.to_json_dict(None, 1 << 62)
        else:
            try:
                out[tag] = element.to_json_dict(None, 1 << 62)
            except Exception:  # an unparsable value must not sink the whole metadata answer
                out[tag] = {"vr": vr}
    return out


def instance_metadata(
    ds: Dataset,
    *,
    study: str,
    series: str,
    instance: str,
    pixel_vr: str | None,
    threshold: int,
) -> bytes:
    """Cached form of one instance's metadata: JSON bytes with the base URL left as a placeholder."""
    try:
        correct_ambiguous_vr(ds, is_little_endian=True)
    except Exception:  # ambiguous VRs are then resolved element by element in dataset_to_json
        pass
    prefix = f"{PLACEHOLDER}{instance_path(study, series, instance)}/bulkdata"
    body = dataset_to_json(ds, prefix, threshold)
    if pixel_vr is not None:
        body["7FE00010"] = {"vr": pixel_vr, "BulkDataURI": f"{prefix}/7FE00010"}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def with_base(cached: bytes, base: str) -> bytes:
    return cached.replace(_PLACEHOLDER_BYTES, base.encode())


class MetadataCache:
    """LRU of cached metadata bytes keyed by (SOP Instance UID, blob path), bounded in total bytes.

    Keying by blob path makes a replaced instance (duplicate policy "replace") miss the cache.
    """

    def __init__(self, max_bytes: int = 256 * 1024**2) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)
