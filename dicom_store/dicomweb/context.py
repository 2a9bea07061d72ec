"""What every DICOMweb handler shares: the store, the authorize callable, limits, caches and metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import Response

from dicom_store.dicomweb.asgi import Action, Authorize, base_url
from dicom_store.dicomweb.counters import LoopCounter
from dicom_store.dicomweb.json_model import MetadataCache
from dicom_store.store import Store

DICOM_JSON = "application/dicom+json"


class Metrics:
    """DICOMweb counters, registered in the registry the api exposes at /metrics."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        registry = registry or CollectorRegistry()
        self.instances_stored = Counter(
            "marrowlink_instances_stored", "Instances stored over STOW-RS", registry=registry
        )
        self.stow_failures = Counter(
            "marrowlink_stow_failures", "STOW-RS instances refused, by failure reason", ["reason"], registry=registry
        )
        self.frames_served = LoopCounter("marrowlink_frames_served_total", "WADO-RS frames sent")
        registry.register(self.frames_served)


@dataclass
class Context:
    store: Store
    authorize: Authorize
    max_request_bytes: int
    bulkdata_threshold: int
    fallback_base_url: str
    metrics: Metrics
    qido_max_results: int = 1000
    metadata_cache: MetadataCache = field(default_factory=MetadataCache)

    def check(self, request: Request, action: Action) -> None:
        """Raise Denied unless the caller may do ``action``."""
        self.authorize(request.headers.get("authorization"), action)

    def base(self, request: Request) -> str:
        return base_url(request.scope, self.fallback_base_url)


def json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"detail": detail}), status, headers=headers, media_type="application/json")
