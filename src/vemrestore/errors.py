"""Error types shared by every package."""

__all__ = ["UserInputError"]


class UserInputError(ValueError):
    """A mistake in what the user gave (path, file, parameter), not a bug.

    The message says what is wrong, where, and how to fix it. The CLI prints
    it as one line and exits with code 2.
    """
