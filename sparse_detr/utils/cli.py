"""How the project's command-line tools end: a user error in one or two lines, Ctrl-C in one.

    def main(argv=None) -> int:
        return run_tool(run, argv, "export.py")   # run(argv) does the work, raising on errors

A bad file, option or value, or a full disk (``ValueError``, ``KeyError``, ``OSError``, refused pickles,
missing modules, non-finite weights or losses) prints ``<tool>: error: <message>`` (its first line; the rest
with ``--debug``) and exits 2; Ctrl-C prints ``<tool>: interrupted`` and exits 130 (outputs are replaced only
when complete, so earlier files are intact). Anything else is a bug and keeps its traceback; so does
everything with ``--debug``.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable

__all__ = ["USER_ERRORS", "run_tool", "setup_tool_logger"]

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,  # an unknown config key, named
    OSError,
    ImportError,
    pickle.UnpicklingError,
    FloatingPointError,
)
DEBUG_FLAG = "--debug"


def run_tool(work: Callable[[list[str]], object], argv: list[str] | None = None, tool: str = "") -> int:
    """Run ``work(argv)`` (``--debug`` removed from the arguments; default ``sys.argv[1:]``) and return the
    process's exit status (``work``'s if an int, else 0); ``tool`` names the tool in the messages."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in args
    if debug:
        args.remove(DEBUG_FLAG)
    tool = tool or os.path.basename(sys.argv[0])
    try:
        status = work(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{tool}: interrupted (files are replaced only when complete: earlier ones are intact)",
              file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            raise
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        lines = message.strip().splitlines() or [type(error).__name__]
        print(f"{tool}: error: {lines[0]}", file=sys.stderr)
        if len(lines) > 1:  # e.g. a library's explanation appended to ours
            print(f"{tool}: ({len(lines) - 1} more line(s) of detail with --debug)", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


def setup_tool_logger(output: str | None = None, distributed_rank: int = 0):
    """Detectron2's ``setup_logger`` for the project's messages (console, and ``output``/log.txt), with
    console colours only on a terminal: a console redirected to a file gets no escape codes. Detectron2's
    and fvcore's console handlers set up earlier (``default_setup``) lose their colours the same way."""
    import logging

    from detectron2.utils.logger import setup_logger

    logger = setup_logger(output, distributed_rank, name="sparse_detr", color=sys.stdout.isatty())
    if not sys.stdout.isatty():
        plain = logging.Formatter(
            "[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt="%m/%d %H:%M:%S"
        )
        for name in ("detectron2", "fvcore", "d2"):
            for handler in logging.getLogger(name).handlers:
                if type(handler.formatter).__name__ == "_ColorfulFormatter":
                    handler.setFormatter(plain)
    return logger
