"""Handing the app's own files to Gradio, wherever the work and cache folders are.

Gradio serves a returned file only after copying it into its cache, and it copies only files under the working
directory, the system temp folder or `allowed_paths`. The app's files live in the session folders (`--work-dir`,
default <temp>/maskedit-sessions) and the LoRA cache (default ~/.cache/maskedit/loras, `MASKEDIT_CACHE_DIR`,
`--lora-cache FOLDER`), which may be anywhere. Listing those folders in `allowed_paths` would let any client
download every file in them (other sessions' uploads, every cached LoRA) by path. Instead, each file a handler
returns is copied into Gradio's cache here, as Gradio itself would copy it (`processing_utils.save_file_to_cache`,
the same content-addressed folder): exactly the files the app returns become downloadable, nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

LOG = logging.getLogger("maskedit.app")


class ServingError(Exception):
    """A file the app made could not be handed to Gradio (e.g. the disk of Gradio's cache is full)."""


class Serving:
    """Copies the app's result files into Gradio's cache. roots() → the folders whose files are the app's own (the
    sessions' root and the shared LoRA cache); a path outside them is returned as it is (Gradio checks it)."""

    def __init__(self, roots: Callable[[], list]):
        self.roots = roots

    def own(self, path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved.is_relative_to(Path(root).resolve()) for root in self.roots() if root)

    def file(self, path) -> str | None:
        """The path Gradio serves `path` from (None stays None). Raises ServingError when it cannot be copied."""
        if path is None or path == "":
            return None
        from gradio import processing_utils
        from gradio.utils import get_upload_folder

        source = Path(str(path))
        if not source.is_file() or not self.own(source):
            return str(path)
        if source.resolve().is_relative_to(Path(get_upload_folder()).resolve()):
            return str(source)
        try:
            return processing_utils.save_file_to_cache(source, cache_dir=get_upload_folder())
        except OSError as error:
            LOG.warning("could not serve %s: %s", source.name, error)
            raise ServingError(f"{source.name} could not be served ({error.strerror or error})") from None

    def files(self, paths) -> list[str] | None:
        """`file` of each path of a list (None stays None)."""
        return None if paths is None else [self.file(p) for p in paths]

    def side(self, paths, notes: list[str]):
        """`file` (a path) or `files` (a list) of a side output: when it cannot be served, None and a note in `notes`
        instead of an error, so that the main result still reaches the user."""
        try:
            return self.files(paths) if isinstance(paths, (list, tuple)) else self.file(paths)
        except ServingError as error:
            notes.append(f"{error}; the rest of the result is complete")
            return None

    def result(self, result, side_files=None) -> tuple:
        """(edited video, side by side, report Markdown, report[, side files]) of a `GenerateResult`, ready for Gradio:
        the edited video is served (its error is the call's); the side-by-side and `side_files` (e.g. the LoRA files
        of /edit), when one cannot be served, are left out with a line in the report, so finished work is never lost
        to a serving error."""
        notes: list[str] = []
        edited = self.file(result.edited)
        side_by_side = self.side(result.side_by_side, notes)
        files = self.side(list(side_files), notes) if side_files is not None else None
        report = result.report_markdown + "".join(f"\n| ⚠️ | {note} |" for note in notes)
        served = (edited, side_by_side, report, dict(result.report, serving_notes=notes) if notes else result.report)
        return served if side_files is None else (*served, files or [])

    def gallery(self, items) -> list:
        """`file` of each (path, caption) item of a gallery."""
        return [(self.file(path), caption) for path, caption in items]
