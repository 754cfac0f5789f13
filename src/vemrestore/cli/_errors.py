"""Map user mistakes to one line on stderr and exit code 2; bugs keep their traceback.

Command-line usage errors (a bad value, a missing argument, an unknown
option) print ``error: ...`` too, instead of typer's boxed panel, and
warnings print as ``warning: ...`` without the source line that raised them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import typer
import typer.core
from pydantic import ValidationError

from vemrestore.errors import UserInputError

__all__ = ["UserErrorGroup", "format_validation_error", "show_warning"]

# click's UsageError, of the click typer uses (recent typer vendors its own copy):
# the base of every parsing error (bad value, missing argument, unknown option).
UsageError: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError"
)


def format_validation_error(error: ValidationError) -> str:
    """One line naming each invalid field and why."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        parts.append(f"{where}: {item['msg']}")
    return f"invalid {error.title} options: " + "; ".join(parts)


def one_line(text: str) -> str:
    """``text`` on one line: its non-blank lines joined by ``"; "``, without a final period."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines).rstrip(".")


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning as one line ``warning: <message>`` on stderr (a `warnings.showwarning`)."""
    typer.echo(f"warning: {one_line(str(message))}", err=True)


def usage_message(error: Any) -> str:
    """One line for a usage error: what is wrong, then where to read the usage."""
    text = one_line(error.format_message())
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    command = error.ctx.command_path if error.ctx is not None else "vemrestore"
    return f"{text} (see `{command} --help`)"


@contextmanager
def _usage_errors_as_one_line() -> Iterator[None]:
    """Turn a click usage error into ``error: ...`` on stderr and exit code 2.

    ``NoArgsIsHelpError`` (a command given no arguments) still shows the help.
    """
    try:
        yield
    except UsageError as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            raise
        typer.echo(f"error: {usage_message(error)}", err=True)
        raise typer.Exit(2) from None


class UserErrorGroup(typer.core.TyperGroup):
    """A typer group whose commands turn user errors into ``error: ...`` and exit 2.

    Parsing errors of the group's own options (``make_context``) and of its
    commands' (raised while ``invoke`` builds their context) never reach
    typer's rich error panel.
    """

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: typer.Context | None = None,
        **extra: Any,
    ) -> typer.Context:
        with _usage_errors_as_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with _usage_errors_as_one_line():
                return super().invoke(ctx)
        except UserInputError as error:
            message = str(error)
        except ValidationError as error:
            message = format_validation_error(error)
        except FileNotFoundError as error:
            message = f"file not found: {error.filename or error} (check the path)"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)
