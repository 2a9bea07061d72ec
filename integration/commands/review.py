"""`marrowlink users …`, `sign`, `correct`: accounts, and the sign-off for those who work from a shell.

The review pages do the same through the HTTP API; both go through integration.workflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

users_app = typer.Typer(help="Local user accounts (people log in to the review pages with them).")

DataOption = Annotated[Path | None, typer.Option("--data", help="Data directory (default: MARROWLINK_DATA).")]


def _components(data: Path | None):  # type: ignore[no-untyped-def]
    from integration.service import build_components
    from integration.settings import load_settings

    return build_components(load_settings(data_dir=data))


@users_app.command("add")
def users_add(
    login: Annotated[str, typer.Argument(help="Login name (letters, digits, '.', '-', '_').")],
    password: Annotated[
        str, typer.Option(prompt=True, confirmation_prompt=True, hide_input=True, help="Asked for when not given.")
    ],
    role: Annotated[str, typer.Option(help="viewer, technologist, pathologist, admin or integrator.")] = "viewer",
    name: Annotated[str, typer.Option(help="Name as Family^Given (it goes into signed reports).")] = "",
    organization: Annotated[str, typer.Option(help="Organization named in signed reports.")] = "",
    data: DataOption = None,
) -> None:
    """Add a user; the password is asked for (and stored only as an argon2 hash)."""
    from integration.users import UserError, Users

    components = _components(data)
    try:
        account = Users(components.engine).add(login, password, role, name=name, organization=organization)
    except UserError as exc:
        typer.secho(f"not added: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    finally:
        components.engine.dispose()
    typer.echo(f"added {account.login} ({account.role})")


@users_app.command("list")
def users_list(data: DataOption = None) -> None:
    """The accounts and their roles."""
    from integration.users import Users

    components = _components(data)
    try:
        for account in Users(components.engine).list():
            typer.echo(f"{account.login}\t{account.role}\t{account.display_name}\t{account.organization}")
    finally:
        components.engine.dispose()


def _as_pathologist(data: Path | None, login: str, refused: str, act):  # type: ignore[no-untyped-def]
    """Run `act(workflow, account, components)` as an active pathologist account; refusals exit 2 with a line."""
    from integration.users import Users
    from integration.workflow import Workflow, WorkflowError

    components = _components(data)
    try:
        account = Users(components.engine).get(login)
        if account is None or account.role != "pathologist":
            typer.secho(f"{refused}: {login!r} is not an active pathologist account", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        return act(Workflow(components.engine, components.store, components.settings), account, components)
    except WorkflowError as exc:
        typer.secho(f"{refused}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    finally:
        components.engine.dispose()


def sign_command(
    accession: Annotated[str, typer.Argument(help="Accession number of the case.")],
    user: Annotated[str, typer.Option("--user", help="Login of the signing pathologist.")],
    data: DataOption = None,
) -> None:
    """Sign a reviewed case: the final (or corrected) SR is stored and the ORU F (or C) queued."""
    from integration.workflow import Signer

    def act(workflow, account, components):  # type: ignore[no-untyped-def]
        signer = Signer(account.login, account.name, account.organization)
        return workflow.sign(accession, signer, actor=f"user:{account.login}")

    signed = _as_pathologist(data, user, "not signed", act)
    typer.echo(f"{accession}: {signed.status} report {signed.sr_instance_uid}")
    if signed.outbox_id is not None:
        typer.echo(f"ORU^R01 ({'C' if signed.status == 'corrected' else 'F'}) queued as outbox #{signed.outbox_id}")


def correct_command(
    accession: Annotated[str, typer.Argument(help="Accession number of the signed case.")],
    user: Annotated[str, typer.Option("--user", help="Login of the pathologist who reopens it.")],
    reason: Annotated[str, typer.Option(help="Why the signed result is corrected (audited).")] = "",
    data: DataOption = None,
) -> None:
    """Reopen a signed case for a correction; its next sign-off supersedes the signed report (ORU C)."""

    def act(workflow, account, components):  # type: ignore[no-untyped-def]
        workflow.reopen(accession, actor=f"user:{account.login}", reason=reason)

    _as_pathologist(data, user, "not reopened", act)
    typer.echo(f"{accession}: reopened for a correction")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.command("sign")(sign_command)
    app.command("correct")(correct_command)
