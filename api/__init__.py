"""api: the FastAPI application (REST, review pages, auth) that mounts the DICOMweb service."""

from api.app import RESEARCH_NOTICE, create_app

__all__ = ["RESEARCH_NOTICE", "create_app"]
