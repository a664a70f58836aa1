"""The commands layer: one module per ``tagless`` subcommand (``tagless eval`` is
:mod:`~tagless.commands.evaluate`, not to shadow the builtin), each a thin adapter from parsed
arguments to library calls and to what is printed or written.

Each module has ``add_parser(sub)``, which registers its subparser and sets ``func`` to the
function that runs it (``func(args) -> dict``: the results that ``--json`` prints).
``tagless.cli`` parses and dispatches only. A new command is one module here and one entry in ``COMMANDS``.
"""

from tagless.commands import compare, data, demo, evaluate, export, labels, report, train

COMMANDS = (demo, train, report, data, labels, compare, evaluate, export)  # the order of ``tagless --help``

__all__ = ["COMMANDS"]
