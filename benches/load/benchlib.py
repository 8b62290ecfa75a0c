"""benchlib.py: what the load-test tools share (standard library only).

Not a tool: each tool in benches/load/ imports it for its command line,
its error handling and its `key=value` output.
"""

import argparse
import sys


class ToolError(Exception):
    """An input a tool cannot use: printed on one line, exit status 1."""


def arg_parser(doc):
    """A parser whose --help is the tool's module docstring."""
    summary, _, details = (doc or "").strip().partition("\n")
    return argparse.ArgumentParser(
        description=summary,
        epilog=details.strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def run(main):
    """Runs `main(argv)`; a ToolError or an unreadable file ends the tool with
    its message on stderr and status 1 instead of a traceback."""
    try:
        sys.exit(main(sys.argv[1:]) or 0)
    except (ToolError, OSError) as e:
        name = sys.argv[0].rsplit("/", 1)[-1]
        print("%s: %s" % (name, e), file=sys.stderr)
        sys.exit(1)


def fields_line(pairs):
    """`key=value key=value ...`, the one-line output the shell scripts read
    with their `kv` helper."""
    return " ".join("%s=%s" % (key, value) for key, value in pairs)
