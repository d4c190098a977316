"""What every command module of `python -m maskedit` shares: the program name and the help layout."""

from __future__ import annotations

import argparse
import textwrap

PROG = "python -m maskedit"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and epilog's line breaks; wraps option help without splitting hub ids."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def paragraph(text: str) -> str:
    """`text` wrapped to the help's 100 columns."""
    return textwrap.fill(text, 100, break_on_hyphens=False)
