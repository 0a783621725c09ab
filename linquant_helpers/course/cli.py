"""The ``linquant`` command: the course's tools as subcommands, as ``mkdocs build`` or
``jupyter-book build`` are.

    linquant run [NN ...] [--solutions | --inplace]   # execute the notebooks headless
    linquant site [--out DIR]                         # the offline course site
    linquant progress PATH... [--json]                # who passed which exercise
    linquant guide [--check]                          # docs/instructors.md's generated parts
    linquant COMMAND --help                           # the options of each

Installed as a console script (``[project.scripts]`` in pyproject.toml) by
``pip install -e .``; ``python -m linquant_helpers.course`` runs the same command.
Bad input exits with status 2 and one line that names the file or the argument.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from . import guide, progress, run, site
from .files import UsageError

COMMANDS: dict[str, ModuleType] = {"run": run, "site": site, "progress": progress, "guide": guide}
"""Each subcommand's module: its ``HELP`` line, ``configure(parser)`` and ``handle(args)``."""


def parser() -> argparse.ArgumentParser:
    """The ``linquant`` parser, with one subparser per entry of :data:`COMMANDS`."""
    top = argparse.ArgumentParser(
        prog="linquant",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(command)
        command.set_defaults(handle=module.handle, prog=command.prog)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run ``linquant`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    ``argparse`` exits with 2 for unknown options; a subcommand's
    :class:`~linquant_helpers.course.files.UsageError` is printed as
    ``linquant COMMAND: error: ...`` with status 2.
    """
    args = parser().parse_args(argv)
    try:
        code = args.handle(args)
    except UsageError as err:
        print(f"{args.prog}: error: {err}", file=sys.stderr)
        return 2
    if code == run.EXIT_INTERRUPTED:
        # The interrupted notebook's worker thread may still wait on its (stopped)
        # kernel, and nbclient's exit hook would try to shut that kernel down
        # again: leave now, with everything written already flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
