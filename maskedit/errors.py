"""The one exception type for problems a user can fix.

Anything raised as `MaskEditError` is shown to the user as its message alone (no traceback): the
message says what is wrong and what to do about it. Everything else is a bug.

It is a `ValueError`, as diffusers' own argument checks are, so code written against diffusers pipelines
(`except ValueError`) handles `MaskEditPipeline`'s checks the same way.
"""


class MaskEditError(ValueError):
    """A user-facing error: bad input, a mismatch between files, a missing model."""
