"""integration: configuration, case/job orchestration, the `marrowlink` CLI.

The only package that knows every other one; the others take plain constructor arguments.
"""

from integration.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
