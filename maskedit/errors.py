"""The one exception type for problems a user can fix.

Anything raised as `MaskEditError` is shown to the user as its message alone (no traceback): the
message says what is wrong and what to do about it. Everything else is a bug.

It is a `ValueError`, as diffusers' own argument checks are, so code written against diffusers pipelines
(`except ValueError`) handles `MaskEditPipeline`'s checks the same way.
"""


class MaskEditError(ValueError):
    """A user-facing error: bad input, a mismatch between files, a missing model."""


class ModelUnavailable(MaskEditError):
    """A model's weights could not be loaded: `reason` is the short why (whole), `model_id` what was asked for;
    each kind of model words the rest of the message (`describe`: what to do instead). It crosses a ZeroGPU call
    (pickled) with its fields."""

    def __init__(self, reason: str, model_id: str):
        self.reason, self.model_id = reason, model_id
        super().__init__(self.describe(reason, model_id))

    @staticmethod
    def describe(reason: str, model_id: str) -> str:
        return f"could not load {model_id!r}: {reason}"

    def __reduce__(self):
        return type(self), (self.reason, self.model_id)
