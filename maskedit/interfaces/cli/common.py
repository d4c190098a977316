"""What every command module of `python -m maskedit` shares: the program name and the help layout."""

from __future__ import annotations

import argparse
import sys
import textwrap

PROG = "python -m maskedit"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and epilog's line breaks; wraps option help without splitting hub ids."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class DeprecatedFlag(argparse.Action):
    """An old spelling that still works: stores into the new flag's dest and says, once, to use the new flag.

        parser.add_argument("--prompt", dest="train_prompt", action=DeprecatedFlag, new="--train-prompt",
                            meaning="the caption of the ORIGINAL first frame", help=argparse.SUPPRESS)"""

    def __init__(self, option_strings, dest, new: str = "", meaning: str = "", **kwargs):
        self.new, self.meaning = new, meaning
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated: here it is {self.meaning}; write {self.new}", file=sys.stderr,
              flush=True)
        setattr(namespace, self.dest, values)


def paragraph(text: str) -> str:
    """`text` wrapped to the help's 100 columns."""
    return textwrap.fill(text, 100, break_on_hyphens=False)
