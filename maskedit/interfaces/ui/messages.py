"""What a user sees when something fails: one gr.Error and one log line for a mistake they can fix, never a
traceback; the library's messages in the page's terms (its controls instead of the command line's flags), with
the server's folders taken out."""

from __future__ import annotations

import functools
import inspect
import logging
import re
from pathlib import Path

import gradio as gr

from ...errors import MaskEditError

LOG = logging.getLogger("maskedit.app")
APP_TERMS = (  # the more specific first
    ("(--backend sam2 downloads it)", "(start the app with --segmenter sam2 to download it)"),
    ("--backend fallback is fast", "the app's --segmenter fallback is fast"),
    ("check overlay.mp4", "check the Mask overlay video"),
    ("--backend ", "--segmenter "),
    ('type it yourself (--train-prompt "a short description of the first frame")', "type the captions yourself"),
    ("or give a local Florence-2 folder in transformers format (--caption-model)",
     "or start the app with --captioner FOLDER (a local Florence-2 folder in transformers format)"),
    ("--caption-model", "--captioner"),
    ("(--fit)", "(the Fit checkbox)"),
    ("(--edit-prompt ", "(the prompt box, e.g. "),
    ("(--min-area)", "(a larger object)"),
    ("(--train-prompt)", "(the caption box of the ORIGINAL first frame)"),
    ("(--later-prompt K=TEXT)", "(the caption box of each edited later frame)"),
    ("pass --speed-lora FILE|owner/repo/file.safetensors",
     "fill in Generate → Advanced → Speed LoRA with a FILE or owner/repo/file.safetensors"),
)
"""The library's messages name the command line's flags; in the app they name the app's own controls."""


def app_message(text: str) -> str:
    """A library message in the app's terms (its flags and controls instead of the command line's)."""
    for cli_term, app_term in APP_TERMS:
        text = text.replace(cli_term, app_term)
    return text


class Messages:
    """The messages of one page. folders: (folder, how a message names it) — the sessions' root ("": a session's
    files are named relative to the session) and the LoRA cache ("LoRA cache/")."""

    def __init__(self, folders: list[tuple[Path, str]]):
        self.folders = folders

    def hide_server_paths(self, text: str) -> str:
        """A message with the server's folders taken out."""
        for folder, shown in self.folders:
            text = re.sub(re.escape(str(folder).rstrip("/")) + (r"/[^/\s]+/?" if shown == "" else r"/?"), shown, text)
        return text

    def user_text(self, error: Exception) -> str:
        """A MaskEditError's message as the page shows it."""
        return self.hide_server_paths(app_message(str(error)))

    def ui_error(self, error: Exception) -> gr.Error:
        """The gr.Error a user sees: a MaskEditError's own message (one line in the log), else a short note (the
        traceback goes to the log)."""
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, MaskEditError):
            message = self.user_text(error)
            LOG.info("user error: %s", message)
            return gr.Error(message, print_exception=False)
        LOG.exception("unexpected error in the app")
        if type(error).__name__ == "OutOfMemoryError":
            return gr.Error("the GPU ran out of memory; use fewer frames or a smaller size, or a lighter preset",
                            print_exception=False)
        return gr.Error(f"something went wrong ({type(error).__name__}: {str(error)[:200]}); see the server log",
                        print_exception=False)

    def guard(self, fn):
        """`fn` with MaskEditError turned into gr.Error(message) and anything else into a short gr.Error
        (logged)."""
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as error:  # noqa: BLE001
                    raise self.ui_error(error) from None
            return generator

        @functools.wraps(fn)
        def regular(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                raise self.ui_error(error) from None
        return regular
