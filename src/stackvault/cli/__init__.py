"""The `stackvault` command: parses, calls a job, renders; one module per command family.

`command` holds the table every command is declared in, `parser` the options, `app` the main that
runs a command under what its entry declares; the other modules hold the commands themselves.
"""

from .app import main, run
from .parser import build_parser

__all__ = ["build_parser", "main", "run"]
