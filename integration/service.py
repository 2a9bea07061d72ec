"""`marrowlink serve`: HTTP, DIMSE and MLLP in one process, stopped cleanly by Ctrl-C / SIGTERM.

The components are built from Settings here and nowhere else; each package only sees plain arguments.
Start order: index → store → DIMSE SCP → HTTP (+ MLLP in the same event loop) → extra HTTP
worker processes. Stop order is the reverse, so nothing accepts work that it can no longer finish.

HTTP workers (``http_workers``): one Python process serves about one core's worth of requests, so the
HTTP port is served by several processes, each with its own listening socket on the port
(SO_REUSEPORT: the kernel spreads new connections over them). The main process is one of them; the
others are spawned children that run only the HTTP app over the same data dir and index (SQLite in WAL
mode is safe across processes; each process keeps its own caches, which revalidate themselves). The
main process restarts a worker that dies and stops them all on shutdown; a worker exits when the main
process goes away, even by kill -9. Prometheus metrics are shared by all of them through
prometheus_client's multiprocess mode (a per-run folder ``<data>/run/metrics-<pid>``, see
``api.metrics``), so any process answers ``/metrics`` with the totals.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

import uvicorn
from sqlalchemy import Engine

from dicom_store import Store
from integration.database import create_index_engine, open_index
from integration.processes import pid_alive
from integration.settings import Settings

log = logging.getLogger("marrowlink")


@dataclass
class Components:
    """What one `serve` process holds; also what tests and benchmarks build in-process."""

    settings: Settings
    engine: Engine
    store: Store


def build_components(settings: Settings, *, migrate: bool = True) -> Components:
    """Index engine and Store; ``migrate=False`` for processes that start after one that migrated."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.effective_database_url
    # every serve process (the main one and each HTTP worker) has a pool: they share one budget
    share = max(3, settings.database_connections // http_worker_count(settings))
    engine = open_index(url, max_connections=share) if migrate else create_index_engine(url, max_connections=share)
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
    from integration.review_service import ReviewAdapter

    return create_app(components.store, config, ReviewAdapter(components.engine, components.store, settings))


def http_config(app, settings: Settings) -> uvicorn.Config:  # type: ignore[no-untyped-def]
    """The same uvicorn settings in the main process and in every HTTP worker.

    With ``http_fast_frames`` the WADO-RS frames route is answered inside uvicorn's protocol, below
    ASGI (``dicom_store.dicomweb.fast_http``); everything else goes through the app.
    """
    options: dict = {}
    if settings.http_fast_frames:
        from api.gateway import PREFIX
        from dicom_store.dicomweb.fast_http import app_frames_route, frames_protocol

        route = app_frames_route(app)
        metrics = getattr(app, "metrics", None)
        protocol = None
        if route is not None:
            observe = getattr(metrics, "observe", None)
            protocol = frames_protocol(route, prefix=PREFIX, observe=observe, cors=bool(settings.cors_origins))
        if protocol is not None:
            options["http"] = protocol
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        **options,
    )


# ---- HTTP worker processes ----------------------------------------------------------------------------------

#: Most HTTP processes chosen automatically (each holds the app, its caches and a database pool).
AUTO_HTTP_WORKERS_MAX = 8


def http_worker_count(settings: Settings) -> int:
    """HTTP processes to run: the setting, or one per CPU core available to us (at most 8); 1 where the
    platform cannot spread one port's connections over several sockets."""
    wanted = settings.http_workers
    if not wanted:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        wanted = max(1, min(cores, AUTO_HTTP_WORKERS_MAX))
    if wanted > 1 and not _can_share_port():
        log.warning("HTTP workers need SO_REUSEPORT load balancing (Linux); serving HTTP in one process")
        return 1
    return wanted


def _can_share_port() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to one (host, port), not yet listening (uvicorn calls listen).

    With several, each gets SO_REUSEPORT. First the port is bound once *without* it: if another server
    holds the port (even another marrowlink, whose sockets set the option), that fails with "address in
    use" instead of the two silently sharing the traffic.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError:
        probe.close()
        raise
    if count == 1:
        probe.set_inheritable(True)
        return [probe]
    port = probe.getsockname()[1]  # the real port when asked for 0
    probe.close()
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _exit_with_parent(parent: int) -> None:
    """In a worker: get SIGTERM when the main process dies, however it dies (Linux PR_SET_PDEATHSIG;
    elsewhere a thread that watches the parent id)."""
    installed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            installed = libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) == 0  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            installed = False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)
    if not installed:  # pragma: no cover - not Linux

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: Libraries whose INFO lines describe their own steps, not the workflow's (highdicom logs ~30 per slide).
QUIET_LOGGERS = ("alembic", "highdicom", "h5py", "PIL")


def configure_logging() -> None:
    """The service's log tells the workflow's steps; libraries speak at WARNING and above."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=_log_stream()
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _log_stream():  # type: ignore[no-untyped-def]
    """A stream on a duplicate of the process's stderr descriptor.

    TensorFlow's start-up points descriptor 2 at /dev/null for a few seconds (ai.runtime, to keep its C++
    chatter out); the service's other threads go on logging meanwhile (the HTTP server, MLLP, the pipeline)
    and their lines must not be lost with TensorFlow's.
    """
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured by a test runner)
        return sys.stderr


def _http_worker_main(settings: Settings, sock: socket.socket, parent: int, number: int) -> None:
    """Entry point of an HTTP worker process (spawned): the HTTP app only, on its own socket."""
    _exit_with_parent(parent)
    configure_logging()
    components = build_components(settings, migrate=False)
    try:
        server = uvicorn.Server(http_config(build_app(components), settings))
        log.info("HTTP worker %d serving (pid %d)", number, os.getpid())
        server.run(sockets=[sock])
    finally:
        components.engine.dispose()


class HttpWorkers:
    """The HTTP processes beside the main one, one per socket; a dead one is replaced (with back-off)."""

    def __init__(self, settings: Settings, sockets: Sequence[socket.socket]) -> None:
        self._settings = settings
        self._sockets = list(sockets)
        self._context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self._processes: list[BaseProcess | None] = [None] * len(self._sockets)
        self._started_at = [0.0] * len(self._sockets)
        self._failures = [0] * len(self._sockets)
        self._restart_at: list[float | None] = [None] * len(self._sockets)
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p is not None and p.pid is not None and p.is_alive()]

    def start(self) -> None:
        for index in range(len(self._sockets)):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=_http_worker_main,
            args=(self._settings, self._sockets[index], os.getpid(), index + 2),
            name=f"marrowlink-http-{index + 2}",
            daemon=True,
        )
        process.start()
        self._processes[index] = process
        self._started_at[index] = time.monotonic()

    async def supervise(self, interval: float = 1.0) -> None:
        """Replace workers that exit while we are not stopping (crash, OOM kill, kill -9)."""
        while not self._stopping:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for index, process in enumerate(self._processes):
                if self._stopping or process is None or process.is_alive():
                    continue
                if self._restart_at[index] is None:
                    if now - self._started_at[index] > 30:
                        self._failures[index] = 0
                    # one that keeps dying at start-up is retried after 1, 2, 4 … 30 s, not in a loop
                    delay = min(30.0, 2.0 ** (self._failures[index] - 1)) if self._failures[index] else 0.0
                    self._failures[index] += 1
                    self._restart_at[index] = now + delay
                    _metrics_process_dead(process.pid)
                    log.error(
                        "HTTP worker %d (pid %s) exited with code %s; starting another in %.0f s",
                        index + 2,
                        process.pid,
                        process.exitcode,
                        delay,
                    )
                if now >= self._restart_at[index]:  # type: ignore[operator]
                    self._restart_at[index] = None
                    self._spawn(index)

    def signal_stop(self) -> None:
        """Ask every worker to finish its requests and exit (SIGTERM); returns at once."""
        self._stopping = True
        for process in self._processes:
            if process is not None and process.is_alive():
                process.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers (SIGTERM, then SIGKILL after ``timeout``) and close their sockets."""
        self.signal_stop()
        deadline = time.monotonic() + timeout
        for process in self._processes:
            if process is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("HTTP worker pid %s did not stop in %.0f s; killing it", process.pid, timeout)
                process.kill()
                process.join(5)
            _metrics_process_dead(process.pid)
        for sock in self._sockets:
            sock.close()


# ---- metrics shared by the HTTP processes ----------------------------------------------------------------------

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def shared_metrics_dir(settings: Settings, workers: int) -> Path | None:
    """With several HTTP processes: a fresh per-run folder for prometheus_client's multiprocess mode,
    put in the environment before this process imports prometheus_client (workers inherit it).
    Folders left by runs that are gone (kill -9) are removed."""
    if workers == 1:
        return None
    if "prometheus_client" in sys.modules:  # pragma: no cover - imported too early to switch modes
        log.warning("prometheus_client already imported: /metrics reports the process that answers")
        return None
    run = settings.data_dir / "run"
    for old in run.glob("metrics-*"):
        pid = old.name.removeprefix("metrics-")
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = run / f"metrics-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[METRICS_ENV] = str(path)
    return path


def _metrics_process_dead(pid: int | None) -> None:
    """prometheus_client's bookkeeping for a worker that exited (its live gauges stop counting)."""
    if pid is not None and os.environ.get(METRICS_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


Starter = Callable[["Components", AsyncExitStack], Awaitable[None]]


class _Server(uvicorn.Server):
    """uvicorn that also runs our asyncio components (MLLP, the outbox dispatcher) in its event loop, and the
    extra HTTP worker processes."""

    def __init__(
        self,
        config: uvicorn.Config,
        components: Components,
        *,
        starters: Sequence[Starter] = (),
        after_start: Callable[[Components], None] | None = None,
        exit_after: bool = False,
        worker_sockets: Sequence[socket.socket] = (),
    ) -> None:
        super().__init__(config)
        self.components = components
        self._stack = AsyncExitStack()
        self._starters = [*starters, *_async_starters()]
        self._after_start = after_start
        self._exit_after = exit_after
        self.workers = HttpWorkers(components.settings, worker_sockets) if worker_sockets else None
        self._supervisor: asyncio.Task | None = None

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await self._stack.__aenter__()
        for starter in self._starters:
            await starter(self.components, self._stack)
        await super().startup(sockets=sockets)
        if self.workers is not None and not self.should_exit:
            self.workers.start()
            self._supervisor = asyncio.create_task(self.workers.supervise())
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
        if self.workers is not None:
            self.workers.signal_stop()  # they stop accepting now and finish their requests
        await super().shutdown(sockets=sockets)
        if self.workers is not None:
            if self._supervisor is not None:
                self._supervisor.cancel()
            await asyncio.to_thread(self.workers.stop)
        await self._stack.aclose()


def _async_starters() -> list:
    """Components that live in the event loop; each registers its own stop on the exit stack."""
    return [_start_lis, _start_pipeline]


async def _start_pipeline(components: Components, stack: AsyncExitStack) -> None:
    from integration.runner import start_pipeline

    settings = components.settings
    runtime = start_pipeline(components.engine, components.store, settings, watch=settings.watch_dir)
    stack.push_async_callback(asyncio.to_thread, runtime.stop)


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
    configure_logging()
    workers = http_worker_count(settings)
    try:
        sockets = listening_sockets(settings.http_host, settings.http_port, workers)
    except OSError as exc:
        log.error("cannot listen for HTTP on %s:%d: %s", settings.http_host, settings.http_port, exc)
        raise SystemExit(1) from exc
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics_dir = shared_metrics_dir(settings, workers)
    try:
        return _serve(settings, sockets, workers, starters, after_start, exit_after)
    finally:
        if metrics_dir is not None:
            os.environ.pop(METRICS_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(
    settings: Settings,
    sockets: list[socket.socket],
    workers: int,
    starters: Sequence[Starter],
    after_start: Callable[[Components], None] | None,
    exit_after: bool,
) -> int:
    components = build_components(settings)
    dimse = build_dimse(components)
    app = build_app(components)
    dimse.start()
    log.info(
        "marrowlink serving: HTTP %s:%d (%d processes), DICOM %s@%s:%d, MLLP :%d "
        "(research use only, not for clinical diagnosis)",
        settings.http_host,
        sockets[0].getsockname()[1],
        workers,
        settings.ae_title,
        settings.dicom_host,
        settings.dicom_port,
        settings.mllp_port,
    )
    server = _Server(
        http_config(app, settings),
        components,
        starters=starters,
        after_start=after_start,
        exit_after=exit_after,
        worker_sockets=sockets[1:],
    )
    try:
        server.run(sockets=sockets[:1])
        return getattr(server, "exit_code", 0)
    finally:
        if server.workers is not None:
            server.workers.stop()  # already done unless start-up failed half way
        for sock in sockets[:1]:
            sock.close()
        dimse.stop()
        components.engine.dispose()
        log.info("marrowlink stopped")
