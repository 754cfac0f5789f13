"""Command-line interface: ``vemrestore info|degrade|iso|bench|demo|train|predict``.

Each command is a thin layer over the Python API.
"""

from vemrestore.cli._app import app, main

__all__ = ["app", "main"]
