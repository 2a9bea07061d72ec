"""api: the HTTP application (REST, review pages, auth, operations) that mounts the DICOMweb service."""

from api.app import MarrowlinkApp, create_app
from api.auth import Role, TokenAuth, User, require_roles
from api.config import ApiConfig, TokenEntry
from api.notice import RESEARCH_NOTICE

__all__ = [
    "RESEARCH_NOTICE",
    "ApiConfig",
    "MarrowlinkApp",
    "Role",
    "TokenAuth",
    "TokenEntry",
    "User",
    "create_app",
    "require_roles",
]
