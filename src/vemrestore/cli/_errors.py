"""Map user mistakes to one line on stderr and exit code 2; bugs keep their traceback."""

from __future__ import annotations

import click
import typer
import typer.core
from pydantic import ValidationError

from vemrestore.errors import UserInputError

__all__ = ["UserErrorGroup", "format_validation_error"]


def format_validation_error(error: ValidationError) -> str:
    """One line naming each invalid field and why."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        parts.append(f"{where}: {item['msg']}")
    return f"invalid {error.title} options: " + "; ".join(parts)


class UserErrorGroup(typer.core.TyperGroup):
    """A typer group whose commands turn user errors into ``error: ...`` and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserInputError as error:
            message = str(error)
        except ValidationError as error:
            message = format_validation_error(error)
        except FileNotFoundError as error:
            message = f"file not found: {error.filename or error} (check the path)"
        click.echo(f"error: {message}", err=True)
        raise typer.Exit(2)
