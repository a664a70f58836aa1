"""The ``tagless`` command: parses the command line and dispatches to the subcommand's module
in :mod:`tagless.commands` (demo, train, report, data, labels, compare, eval, export)."""

from __future__ import annotations

import argparse
import json
import sys

from tagless.commands import COMMANDS
from tagless.errors import TaglessError
from tagless.tables import json_safe

DESCRIPTION = "Representations and multi-label classifiers from few or no labels."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagless", description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--json", action="store_true", help="print one JSON object of the results as the last line")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    _add_global_flags(parser)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--debug`` work after any subcommand too, where most users type them.
    In subcommands they default to SUPPRESS so that a flag given before the subcommand stays."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
                child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                   help="print one JSON object of the results as the last line")
                _add_global_flags(child)


def unexpected(error: BaseException, limit: int = 300) -> str:
    """One line for an exception tagless did not foresee: its type and its message's first line."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    from tagless.data.decode import quiet_pillow_bomb_warning

    quiet_pillow_bomb_warning()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
        if args.json:
            print(json.dumps(json_safe(result), default=str, allow_nan=False))
    except TaglessError as e:
        if args.debug:
            raise
        print(f"tagless: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tagless: interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an unforeseen input: one line, the traceback with --debug
        if args.debug:
            raise
        print(f"tagless: error: {unexpected(e)} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
