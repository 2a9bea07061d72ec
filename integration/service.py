"""`marrowlink serve`: HTTP, DIMSE and MLLP in one process, stopped cleanly by Ctrl-C / SIGTERM."""

from __future__ import annotations

import logging

import uvicorn

from integration.database import open_index
from integration.settings import Settings

log = logging.getLogger("marrowlink")


def run_service(settings: Settings) -> None:
    from api import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_index(settings.effective_database_url)
    app = create_app()
    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level="info")
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        engine.dispose()
