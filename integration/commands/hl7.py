"""`marrowlink hl7 …` (send, listen, outbox, retry) and the HL7 benchmark behind `marrowlink bench mllp`.

hl7apy and SQLAlchemy are imported inside the commands so `marrowlink --help` stays instant.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

DataOption = Annotated[
    Path | None,
    typer.Option("--data", envvar="MARROWLINK_DATA", help="Data directory (index + blob store)."),
]

hl7_app = typer.Typer(help="HL7 v2 over MLLP: send, listen (LIS stand-in), outbox, retry.", no_args_is_help=True)


def _engine(data: Path | None):  # type: ignore[no-untyped-def]
    from integration.database import open_index
    from integration.settings import load_settings

    settings = load_settings(data_dir=data)
    return open_index(settings.effective_database_url)


def _split_messages(text: str) -> list[str]:
    """A file may hold several messages; each starts with MSH. LF/CRLF become CR."""
    text = re.sub(r"\r\n|\n|\r", "\r", text.lstrip("\ufeff"))
    parts = re.split(r"\r(?=MSH)", text)
    return [p.strip("\r") + "\r" for p in parts if p.strip("\r")]


@hl7_app.command("send")
def send(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="File with one or more HL7 messages.")],
    to: Annotated[str, typer.Option("--to", help="Destination HOST:PORT.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK.")] = 10.0,
) -> None:
    """Send the message(s) in FILE over MLLP and print each answer; exit 1 unless all are AA."""
    import asyncio

    from hl7.mllp import send_message

    host, _, port = to.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter("use HOST:PORT", param_hint="--to")
    failed = 0
    for message in _split_messages(file.read_bytes().decode("utf-8", errors="replace")):
        try:
            reply = asyncio.run(send_message(host, int(port), message, ack_timeout=timeout))
        except (OSError, TimeoutError, ValueError) as exc:
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            failed += 1
            continue
        typer.echo(reply.text.replace("\r", "\n"))
        failed += 0 if reply.accepted else 1
    raise typer.Exit(1 if failed else 0)


@hl7_app.command("listen")
def listen(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 2575,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    ack: Annotated[str, typer.Option(help="Answer code: AA, AE or AR.")] = "AA",
) -> None:
    """A small LIS stand-in: print every message received and answer it (ACK, MSA-2 = its MSH-10)."""
    from hl7.codes import AckCode
    from hl7.standin import LisStandIn

    code = AckCode(ack.upper())

    def show(header, text: str) -> None:  # type: ignore[no-untyped-def]
        typer.echo(f"--- {header.message_type} {header.control_id} from {header.sender} → {code.value}")
        typer.echo(text.replace("\r", "\n"))

    standin = LisStandIn(host, port, answer=lambda header, text: code, on_message=show)
    typer.echo(f"listening on {host}:{port} (Ctrl-C stops)")
    standin.run()


@hl7_app.command("outbox")
def outbox(
    data: DataOption = None,
    state: Annotated[str | None, typer.Option(help="Only queued, held or sent.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N messages.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """List outbound messages: queued, held (waiting for an operator) and sent."""
    from rich.console import Console
    from rich.table import Table

    from hl7.outbox import Outbox

    box = Outbox(_engine(data))
    rows = box.entries(state=state, limit=limit)
    if as_json:
        fields = ("id", "destination", "control_id", "message_type", "reference", "state", "attempts", "last_error")
        typer.echo(json.dumps([{f: getattr(r, f) for f in fields} for r in rows], indent=2))
        return
    table = Table(title=f"HL7 outbox {box.counts()}")
    for column in (
        "id",
        "state",
        "destination",
        "type",
        "MSH-10",
        "reference",
        "attempts",
        "last error / ack",
        "created",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r.id),
            r.state,
            r.destination,
            r.message_type,
            r.control_id,
            r.reference,
            str(r.attempts),
            (r.last_error or r.ack_code or "")[:60],
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console().print(table)


@hl7_app.command("retry")
def retry(
    entry_id: Annotated[int, typer.Argument(help="Outbox message id (see `marrowlink hl7 outbox`).")],
    data: DataOption = None,
) -> None:
    """Release a held message: it is sent next (its destination's queue resumes in order)."""
    from hl7.outbox import Outbox

    try:
        row = Outbox(_engine(data)).release(entry_id)
    except (KeyError, ValueError) as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"released {row.id} ({row.control_id}) to {row.destination}; state {row.state}")


def register(app: typer.Typer) -> None:
    app.add_typer(hl7_app, name="hl7")  # the benchmark is `marrowlink bench mllp` (commands/bench.py)
