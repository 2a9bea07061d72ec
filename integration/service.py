"""`marrowlink serve`: HTTP, DIMSE and MLLP in one process, stopped cleanly by Ctrl-C / SIGTERM.

The components are built from Settings here and nowhere else; each package only sees plain arguments.
Start order: index → store → DIMSE SCP → HTTP (+ MLLP, job runner in the same event loop). Stop order is
the reverse, so nothing accepts work that it can no longer finish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import uvicorn
from sqlalchemy import Engine

from dicom_store import Store
from integration.database import open_index
from integration.settings import Settings

log = logging.getLogger("marrowlink")


@dataclass
class Components:
    """What one `serve` process holds; also what tests and benchmarks build in-process."""

    settings: Settings
    engine: Engine
    store: Store


def build_components(settings: Settings) -> Components:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = open_index(settings.effective_database_url)
    store = Store(
        engine,
        settings.blob_dir,
        duplicate_policy=settings.duplicate_policy,
        max_instance_bytes=settings.max_request_bytes,
    )
    return Components(settings=settings, engine=engine, store=store)


def build_dimse(components: Components):  # type: ignore[no-untyped-def]
    from dicom_store.dimse import DimseServer

    settings = components.settings
    return DimseServer(
        components.store,
        ae_title=settings.ae_title,
        host=settings.dicom_host,
        port=settings.dicom_port,
        allowed_aes=list(settings.allowed_aes),
        remote_aes={r.ae_title: (r.host, r.port) for r in settings.remote_aes},
        ssl_context=dimse_tls(settings),
    )


def dimse_tls(settings: Settings):  # type: ignore[no-untyped-def]
    """The SCP's TLS context from the settings, or None for plain TCP."""
    if not settings.dicom_tls_cert:
        return None
    import ssl

    if not settings.dicom_tls_key:
        raise ValueError("dicom_tls_cert is set but dicom_tls_key is not")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    if settings.dicom_tls_ca:
        context.load_verify_locations(settings.dicom_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def build_app(components: Components):  # type: ignore[no-untyped-def]
    from api import ApiConfig, create_app

    settings = components.settings
    config = ApiConfig(
        tokens=[t.model_dump() for t in settings.tokens],
        cors_origins=list(settings.cors_origins),
        dicomweb_public_read=settings.dicomweb_public_read,
        max_request_bytes=settings.max_request_bytes,
        base_url=settings.base_url,
    )
    return create_app(components.store, config)


Starter = Callable[["Components", AsyncExitStack], Awaitable[None]]


class _Server(uvicorn.Server):
    """uvicorn that also runs our asyncio components (MLLP, job runner) in its event loop."""

    def __init__(
        self,
        config: uvicorn.Config,
        components: Components,
        *,
        starters: Sequence[Starter] = (),
        after_start: Callable[[Components], None] | None = None,
        exit_after: bool = False,
    ) -> None:
        super().__init__(config)
        self.components = components
        self._stack = AsyncExitStack()
        self._starters = [*starters, *_async_starters()]
        self._after_start = after_start
        self._exit_after = exit_after

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await self._stack.__aenter__()
        for starter in self._starters:
            await starter(self.components, self._stack)
        await super().startup(sockets=sockets)
        if self._after_start is not None:
            threading.Thread(target=self._run_after_start, name="after-start", daemon=True).start()

    def _run_after_start(self) -> None:
        try:
            self._after_start(self.components)  # type: ignore[misc]
        except Exception:
            log.exception("start-up task failed")
            self.exit_code = 1
        finally:
            if self._exit_after:
                self.should_exit = True

    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().shutdown(sockets=sockets)
        await self._stack.aclose()


def _async_starters() -> list:
    """Components that live in the event loop; each registers its own stop on the exit stack."""
    return [_start_lis]


async def _start_lis(components: Components, stack: AsyncExitStack) -> None:
    from integration.lis import start_mllp

    runtime = await start_mllp(components.settings, components.engine)
    stack.push_async_callback(runtime.stop)


def run_service(
    settings: Settings,
    *,
    starters: Sequence[Starter] = (),
    after_start: Callable[[Components], None] | None = None,
    exit_after: bool = False,
) -> int:
    """Serve until Ctrl-C/SIGTERM (or, with ``exit_after``, until ``after_start`` is done); exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    components = build_components(settings)
    dimse = build_dimse(components)
    app = build_app(components)
    dimse.start()
    log.info(
        "marrowlink serving: HTTP %s:%d, DICOM %s@%s:%d, MLLP :%d (research use only, not for clinical diagnosis)",
        settings.http_host,
        settings.http_port,
        settings.ae_title,
        settings.dicom_host,
        settings.dicom_port,
        settings.mllp_port,
    )
    config = uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port, log_level="warning", lifespan="on", access_log=False
    )
    server = _Server(config, components, starters=starters, after_start=after_start, exit_after=exit_after)
    try:
        server.run()
        return getattr(server, "exit_code", 0)
    finally:
        dimse.stop()
        components.engine.dispose()
        log.info("marrowlink stopped")
