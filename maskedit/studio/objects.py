"""The Segment step of a session: a list of objects — each from clicks, a sentence (SAM 3) or an uploaded mask
video or box — each kept or dropped and shown in its own colour. The edit region is the union of the kept
ones: the loose box of each connected component of their masks (METHOD.md §3; a box the user gave is taken as
it is), written to the session's prepared folder after every change, so training and generation always see
the current union.

Objects are plain dicts in `SessionState.objects` (the state is pickled on ZeroGPU):
    {"id": 3, "kind": "clicks" | "text" | "mask" | "box", "kept": True, "label": which backend or file made it,
     "approximate": bool, "area": pixels on frame 0, "frames": frames it is on, "masks": its npz file,
     "points": [[x, y, label], ...] (clicks), "text": "the dog" (text, or the text a clicks object refines),
     "score": 0.91 (text: SAM 3's detection score), "file": "mask.mp4" (mask), "box": [x0, y0, x1, y1] (a box
     object's box, or the frame-0 box that a refined object's clicks start from)}
Its masks (bool (F, H, W), tight; a box object's box on every frame) are in segment/objects/<id>.npz.

Clicks go to the session's click target (`click_target`: an object id, or None for a new object): clicks on a
text or mask object refine it (SAM prompt = its frame-0 box + the clicks). The prepared folder records the kept
objects (`source["objects"]`), which reach lora.json and the LoRA cache key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import MaskEditError
from ..limits import (MAX_OBJECTS, check, check_flag, check_points_count, check_text, check_text_prompt, parse_json,
                      shown_value)
from ..workflow import prepare, session
from .state import SessionState

OBJECTS_FOLDER = "objects"  # in the session's segment folder: <id>.npz, each object's masks
NEW = "new"  # the click target that makes a new object
DEFAULT_MARGIN = 0.1


class SegmentObjects:
    """The Segment tab's actions; mixed into `Studio` (needs its `gpu`, `gpu_lock`, `region_lock`, `sub` and
    `checked`)."""

    # ----- clicks on frame 0 (the live overlay)
    def set_points(self, st: SessionState, points, labels) -> np.ndarray:
        """Replace the clicks of the click target; returns frame 0 with the objects and the live mask (uint8 (H, W, 3))."""
        if len(points):
            check_points_count(len(points))
        st.points = np.asarray(points, float).reshape(-1, 2).tolist()
        st.labels = np.asarray(labels, int).reshape(-1).tolist()
        return self.overlay(st)

    def click(self, st: SessionState, x: float, y: float, include: bool) -> np.ndarray:
        return self.set_points(st, [*st.points, [float(x), float(y)]], [*st.labels, 1 if include else 0])

    def undo_click(self, st: SessionState) -> np.ndarray:
        return self.set_points(st, st.points[:-1], st.labels[:-1])

    def points_json(self, st: SessionState) -> str:
        return json.dumps([[round(x, 1), round(y, 1), int(label)] for (x, y), label in zip(st.points, st.labels)])

    def overlay(self, st: SessionState, live: bool = True) -> np.ndarray:
        """Frame 0 with the kept objects in their colours and the clicks of the click target: with `live`, the
        target's mask is made from its clicks now (a GPU call), else it is drawn as last segmented."""
        from ..perception.segmentation import object_color, overlay_objects

        clip, _ = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        frame = clip.frames[0]
        target = self.object(st, st.click_target)
        points, labels = np.asarray(st.points, float).reshape(-1, 2), np.asarray(st.labels, int)
        clicked = live and bool((labels == 1).any())
        tints = [(self._masks(st, o)[:1], object_color(o["id"])[1]) for o in st.objects
                 if (o["kept"] or o is target) and not (clicked and o is target)]
        if clicked:
            box = self._refine_box(st, target)
            with self.gpu_lock:
                mask = self.gpu.image_mask(frame, points, labels, **({"box": box} if box else {}))
            tints.append((np.asarray(mask, bool)[None], object_color(target["id"] if target else self._next_id(st))[1]))
        return overlay_objects(frame[None], tints, points=points if len(points) else None, labels=labels)[0]

    def set_click_target(self, st: SessionState, target) -> tuple[np.ndarray, str]:
        """Send the next clicks to object `target` (its id; "new" or None: a new object). A clicks object's own
        clicks come back to be edited; clicks on a text or mask object refine it. Returns (overlay, points JSON)."""
        chosen = None if target in (None, "", NEW) else self._object_or_error(st, _object_number(target))
        st.click_target = None if chosen is None else chosen["id"]
        clicks = chosen.get("points", []) if chosen is not None and chosen["kind"] == "clicks" else []
        st.points = [[float(x), float(y)] for x, y, _ in clicks]
        st.labels = [int(label) for _, _, label in clicks]
        return self.overlay(st), self.points_json(st)

    # ----- making objects
    def segment(self, st: SessionState, points_json, margin: float = DEFAULT_MARGIN) -> tuple[str, str, str]:
        """Propagate clicks through the clip: the click target's clicks (a new object by default; JSON
        [[x, y, label], ...]), or, with a 4th number per click ([x, y, label, k]), those of object k (an existing
        one: clicks on a text or mask object refine it). The union of the kept objects becomes the edit region.
        Returns (overlay mp4, boxes mp4, Markdown notes)."""
        margin = check("margin", DEFAULT_MARGIN if margin is None else margin, "box margin")
        points, labels, numbers = session.parse_points(points_json, with_objects=True)
        check_points_count(len(points))
        clip, _ = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        default = st.click_target if self.object(st, st.click_target) is not None else self._next_id(st)
        numbers = np.where(numbers == 0, default, numbers)
        groups = list(dict.fromkeys(numbers.tolist()))
        for number in groups:
            if number != default and self.object(st, number) is None:
                raise MaskEditError(f"there is no object {number} to click on; objects: {self._ids_text(st)}. Leave "
                                    "the 4th number out to click a new object (or the one chosen in 'Clicks go to')")
        self._check_room(st, sum(self.object(st, n) is None for n in groups))
        heads, notes = [], []
        for number in groups:
            pick = numbers == number
            existing = self.object(st, number)
            box = self._refine_box(st, existing)
            with self.gpu_lock:
                segmentation = self.gpu.segment_clip(clip.frames, points[pick], labels[pick], float(margin),
                                                     **({"box": box} if box else {}))
            record = {"id": int(number), "kind": "clicks", "kept": True, "label": segmentation.label,
                      "approximate": bool(segmentation.approximate),
                      "points": [[round(float(x), 1), round(float(y), 1), int(l)]
                                 for (x, y), l in zip(points[pick], labels[pick])]}
            if existing is not None and existing.get("text"):
                record["text"] = existing["text"]
            if box:
                record["box"] = [int(v) for v in box]
            self._store(st, record, segmentation.region)
            approximate = segmentation.approximate and "approximate" not in segmentation.label
            heads.append(f"**Segmented with {segmentation.label}**" + (" (approximate)" if approximate else ""))
            notes += [n for n in segmentation.notes if n not in notes]
        target = groups[-1]
        st.click_target = int(target)
        clicks = self.object(st, target)["points"]
        st.points, st.labels = [[x, y] for x, y, _ in clicks], [label for _, _, label in clicks]
        return self.write_region(st, margin, ", ".join(heads), notes)

    def segment_text(self, st: SessionState, text, margin: float = DEFAULT_MARGIN
                     ) -> tuple[str, str, str, list[dict]]:
        """Every instance of `text` ("the red car", "both dogs") through the clip (SAM 3), each a new object
        (highest score first; objects from an earlier search for the same text are replaced). Returns (overlay
        mp4, boxes mp4, Markdown notes, the instances found: [{"object", "colour", "score", "area"}, ...])."""
        from ..perception.segmentation import object_color

        text = check_text_prompt(text)
        margin = check("margin", DEFAULT_MARGIN if margin is None else margin, "box margin")
        if getattr(self.gpu, "segment_text", None) is None:
            raise MaskEditError("this app has no text segmenter; click on the object instead")
        clip, _ = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        replaced = [o for o in st.objects if o["kind"] == "text" and o.get("text") == text]
        room = MAX_OBJECTS - (len(st.objects) - len(replaced))
        if room < 1:
            self._check_room(st, 1)
        with self.gpu_lock:
            found = self.gpu.segment_text(clip.frames, text)
        if not found.instances:
            raise MaskEditError(f'{found.label} found nothing matching "{text}" in the clip; name the object with a '
                                'plain noun ("car", "the dog on the left"), or click on it instead')
        for old in replaced:
            self._drop(st, old)
        rows, lines = [], []
        for instance in found.instances[:room]:
            number = self._next_id(st)
            record = {"id": number, "kind": "text", "kept": True, "label": found.label, "approximate": False,
                      "text": text, "score": round(float(instance.score), 4)}
            self._store(st, record, instance.masks)
            colour = object_color(number)[0]
            rows.append({"object": number, "colour": colour, "score": record["score"], "area": record["area"],
                         "frames": record["frames"]})
            lines.append(f"object {number} ({colour}): score {record['score']:.2f}, {record['area']} px on frame 0, "
                         f"on {record['frames']} of {clip.num_frames} frames")
        notes = lines + ["Untick the instances not to edit; to refine one, choose it under 'Clicks go to' and click."]
        if len(found.instances) > room:
            notes.append(f"kept the {room} highest-scoring of {len(found.instances)} instances (at most "
                         f"{MAX_OBJECTS} objects)")
        st.click_target, st.points, st.labels = None, [], []
        head = f'**Found {len(rows)} instance(s) of "{text}" with {found.label}**'
        overlay, boxes, notes_text = self.write_region(st, margin, head, notes + list(found.notes))
        return overlay, boxes, notes_text, rows

    def use_mask(self, st: SessionState, mask_video=None, box: str | None = None, margin: float = DEFAULT_MARGIN,
                 fit: bool = False) -> tuple[str, str, str]:
        """An object from a mask video (white = edit) or a box "x0,y0,x1,y1" (pixels of the conformed clip),
        exactly one of them, added to the objects. Returns (overlay mp4, boxes mp4, Markdown notes)."""
        from ..method import masks

        margin = check("margin", DEFAULT_MARGIN if margin is None else margin, "box margin")
        fit = check_flag(fit, "fit checkbox")
        box = check_text(box, "box", 200)
        clip, source = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        has_box = bool(box)
        if bool(mask_video) == has_box:
            raise MaskEditError("give either a mask video (white = edit) or a box x0,y0,x1,y1, not both or neither")
        self._check_room(st, 1)
        record = {"id": self._next_id(st), "kept": True, "approximate": False}
        if mask_video:
            upload = self.checked(st, mask_video, "mask video")
            name = "mask" + Path(str(getattr(mask_video, "path", mask_video))).suffix.lower()
            mask_path = session.copy_into(self.sub(st, session.SOURCE_FOLDER), upload, name)
            prepared = prepare.prepare_clip(
                source["video"], mask_video=mask_path, num_frames=source["num_frames"],
                width=source["conformed_width"], height=source["conformed_height"], start=source["start"],
                margin=margin, fit=fit)
            tight = prepared.tight if prepared.tight is not None else prepared.region
            record.update(kind="mask", label="mask video", file=Path(upload).name)
        else:
            parsed = masks.parse_box(box)
            tight = masks.box_region(clip.height, clip.width, parsed, clip.num_frames)
            record.update(kind="box", label="box", box=[int(v) for v in parsed])
        self._store(st, record, tight)
        st.click_target, st.points, st.labels = None, [], []
        return self.write_region(st, margin, f"**Region from the {'mask video' if mask_video else 'box'}**")

    # ----- keeping and removing
    def keep_objects(self, st: SessionState, kept, margin: float | None = None) -> tuple[str | None, str | None, str]:
        """Keep exactly the objects numbered in `kept` (a list of ids, or JSON of one; the others are dropped
        from the edit region but stay listed). Returns (overlay mp4, boxes mp4, Markdown notes)."""
        wanted = _object_numbers(kept)
        unknown = sorted(set(wanted) - {o["id"] for o in st.objects})
        if unknown:
            raise MaskEditError(f"there is no object {', '.join(map(str, unknown))}; objects: {self._ids_text(st)}")
        for record in st.objects:
            record["kept"] = record["id"] in wanted
        return self.write_region(st, margin, "")

    def remove_object(self, st: SessionState, object_id, margin: float | None = None):
        """Remove object `object_id` and its masks. Returns (overlay mp4, boxes mp4, Markdown notes)."""
        self._drop(st, self._object_or_error(st, _object_number(object_id)))
        return self.write_region(st, margin, "")

    def remove_unkept(self, st: SessionState, margin: float | None = None):
        """Remove every object that is not kept. Returns (overlay mp4, boxes mp4, Markdown notes)."""
        dropped = [o for o in st.objects if not o["kept"]]
        for record in dropped:
            self._drop(st, record)
        return self.write_region(st, margin, f"**Removed {len(dropped)} object(s)**" if dropped else "")

    def clear_objects(self, st: SessionState) -> None:
        """Remove every object: no edit region until a new one is made."""
        with self.region_lock:  # not while another call writes the region (quick clicks on the page)
            shutil.rmtree(self.sub(st, session.SEGMENT_FOLDER), ignore_errors=True)
            shutil.rmtree(self.sub(st, session.PREPARED_FOLDER), ignore_errors=True)
            st.objects, st.click_target, st.points, st.labels = [], None, [], []

    # ----- what the page lists
    def object_rows(self, st: SessionState) -> list[list]:
        """One row per object: [number, colour, made from, score, area on frame 0 (px), frames, kept]."""
        from ..perception.segmentation import object_color

        return [[o["id"], object_color(o["id"])[0], _what(o), "" if o.get("score") is None else f"{o['score']:.2f}",
                 o["area"], o["frames"], "yes" if o["kept"] else "no"] for o in st.objects]

    def object_choices(self, st: SessionState) -> list[tuple[str, int]]:
        """(label, id) of each object, for a list of checkboxes."""
        from ..perception.segmentation import object_color

        return [(f"{o['id']} · {object_color(o['id'])[0]} · {_what(o)}", o["id"]) for o in st.objects]

    def target_choices(self, st: SessionState) -> list[tuple[str, str]]:
        """(label, value) of where clicks go: a new object, or each object (to refine it)."""
        return [("a new object", NEW)] + [(f"object {o['id']} ({_what(o)})", str(o["id"])) for o in st.objects]

    def kept_ids(self, st: SessionState) -> list[int]:
        return [o["id"] for o in st.objects if o["kept"]]

    def describe_objects(self, st: SessionState) -> list[dict]:
        """The objects as JSON-able dicts without file paths (what lora.json records)."""
        return [_public(o) for o in st.objects]

    # ----- the union
    def write_region(self, st: SessionState, margin: float | None, head: str = "",
                     notes: list[str] | None = None) -> tuple[str | None, str | None, str]:
        """`_write_region` with the region's files to itself (two events of the page may change the objects at once:
        one removing the folders another writes into would leave a half-written region)."""
        with self.region_lock:
            return self._write_region(st, margin, head, notes)

    def _write_region(self, st: SessionState, margin: float | None, head: str = "",
                      notes: list[str] | None = None) -> tuple[str | None, str | None, str]:
        """Write the kept objects' union as the session's edit region: prepared/ (boxes, tight masks, the objects
        in its source) and segment/ (overlay.mp4 in the objects' colours, boxes.mp4, masks.mp4). With no kept
        object the prepared folder is removed (training and generation then ask for a region). Returns
        (overlay mp4 or None, boxes mp4 or None, Markdown: `head`, what the boxes cover, then `notes`)."""
        from ..method import masks
        from ..media.video import write_video
        from ..perception.segmentation import object_color, overlay_objects, union_region

        margin = st.margin if margin is None else check("margin", margin, "box margin")
        st.margin = float(margin)
        clip, source = session.load_clip(self.sub(st, session.CLIP_FOLDER))
        out = self.sub(st, session.SEGMENT_FOLDER)
        kept = [o for o in st.objects if o["kept"]]
        tail = "".join(f"  \n{n}" for n in notes or [])
        if not kept:
            shutil.rmtree(self.sub(st, session.PREPARED_FOLDER), ignore_errors=True)
            for name in ("overlay.mp4", "boxes.mp4", "masks.mp4"):
                (out / name).unlink(missing_ok=True)
            return None, None, (f"{head}  \n" if head else "") + (
                "No object is kept, so there is no region to edit: tick an object, click on the object, type what "
                "to edit, or upload a mask.") + tail
        tight = [(self._masks(st, o), object_color(o["id"])[1]) for o in kept]
        region, box_lists = union_region([m for (m, _), o in zip(tight, kept) if o["kind"] != "box"],
                                         [o["box"] for o in kept if o["kind"] == "box"], clip.num_frames,
                                         clip.height, clip.width, margin=float(margin))
        if not region.any():
            raise MaskEditError("the kept objects are specks smaller than "
                                f"{masks.MIN_COMPONENT_AREA} pixels on every frame, so they make no box; keep a "
                                "larger object or segment it again")
        union = np.logical_or.reduce([m for m, _ in tight])
        clicks = [(x, y, label) for o in kept if o["kind"] == "clicks" for x, y, label in o["points"]]
        points = [[x, y] for x, y, _ in clicks]
        labels = [label for _, _, label in clicks]
        prepared = prepare.PreparedClip(clip, region, union, list(clip.notes),
                                        dict(source, points=points, labels=labels, margin=float(margin),
                                             objects=[_public(o) for o in kept]))
        prepare.save_prepared(prepared, self.sub(st, session.PREPARED_FOLDER))
        preview = overlay_objects(clip.frames, tight, box_lists, points=np.asarray(points, float).reshape(-1, 2),
                                  labels=np.asarray(labels, int))
        write_video(out / "overlay.mp4", preview, clip.fps)
        masks.write_mask_video(out / "boxes.mp4", region, clip.fps)
        masks.write_mask_video(out / "masks.mp4", union, clip.fps)
        listed = ", ".join(f"{o['id']} ({object_color(o['id'])[0]}, {_what(o)})" for o in kept)
        covered = f"boxes cover {region[1:].mean():.0%} of the frames"
        text = (f"{head}; {covered}" if head else covered[0].upper() + covered[1:]) + (
            f"; the edit region is the union of {len(kept)} objects: {listed}." if len(kept) > 1 else ".")
        return str(out / "overlay.mp4"), str(out / "boxes.mp4"), text + tail

    # ----- helpers
    def object(self, st: SessionState, object_id) -> dict | None:
        if object_id is None:
            return None
        return next((o for o in st.objects if o["id"] == int(object_id)), None)

    def _object_or_error(self, st: SessionState, object_id: int) -> dict:
        found = self.object(st, object_id)
        if found is None:
            raise MaskEditError(f"there is no object {object_id}; objects: {self._ids_text(st)}")
        return found

    @staticmethod
    def _ids_text(st: SessionState) -> str:
        return ", ".join(str(o["id"]) for o in st.objects) or "none yet"

    @staticmethod
    def _next_id(st: SessionState) -> int:
        return max([0, *(o["id"] for o in st.objects)]) + 1

    @staticmethod
    def _check_room(st: SessionState, new: int) -> None:
        if new and len(st.objects) + new > MAX_OBJECTS:
            raise MaskEditError(f"an edit holds at most {MAX_OBJECTS} objects and this one has {len(st.objects)}; "
                                "remove some (untick and remove, or clear) before adding more")

    def _path(self, st: SessionState, object_id: int) -> Path:
        return self.sub(st, session.SEGMENT_FOLDER) / OBJECTS_FOLDER / f"{int(object_id)}.npz"

    def _masks(self, st: SessionState, record: dict) -> np.ndarray:
        with np.load(self._path(st, record["id"])) as data:
            return data["masks"].astype(bool)

    def _store(self, st: SessionState, record: dict, found: np.ndarray) -> None:
        """Save an object's masks (bool (F, H, W)) and put its record in the list (replacing one of its id)."""
        from ..media.files import save_npz

        found = np.asarray(found, dtype=bool)
        path = self._path(st, record["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(path, masks=found)
        record.update(area=int(found[0].sum()), frames=int(found.reshape(len(found), -1).any(axis=1).sum()))
        for index, old in enumerate(st.objects):
            if old["id"] == record["id"]:
                st.objects[index] = record
                return
        st.objects.append(record)

    def _drop(self, st: SessionState, record: dict) -> None:
        st.objects = [o for o in st.objects if o["id"] != record["id"]]
        self._path(st, record["id"]).unlink(missing_ok=True)
        if st.click_target == record["id"]:
            st.click_target, st.points, st.labels = None, [], []

    def _refine_box(self, st: SessionState, record: dict | None) -> list[int] | None:
        """The box that clicks on `record` start from: a refined object's box; a text, mask or box object's
        bounding box on frame 0 (None when it is not on frame 0, or for a clicks object)."""
        from ..perception.segmentation import frame_box

        if record is None:
            return None
        if record["kind"] == "clicks":
            return record.get("box")
        box = frame_box(self._masks(st, record)[0])
        return None if box is None else list(box)


def _object_number(value) -> int:
    if isinstance(value, bool) or (isinstance(value, str) and len(value) > 12):
        raise MaskEditError(f"{shown_value(value)} is not an object number; give 1, 2, ...")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MaskEditError(f"{shown_value(value)} is not an object number; give 1, 2, ...") from None
    if not number.is_integer() or not 1 <= number <= MAX_OBJECTS * 1000:
        raise MaskEditError(f"{shown_value(value)} is not an object number; give 1, 2, ...")
    return int(number)


def _object_numbers(values) -> list[int]:
    """Object numbers from a list (of ints or strings) or its JSON; [] for None/empty."""
    if values is None or values == "":
        return []
    if isinstance(values, str):
        stripped = values.strip()
        values = (parse_json(stripped, "object numbers", "[1, 3]", max_depth=1, max_chars=400)
                  if stripped.startswith("[") else stripped.replace(",", " ").split())
    if isinstance(values, (int, float)):
        values = [values]
    if not isinstance(values, (list, tuple)) or len(values) > MAX_OBJECTS:
        raise MaskEditError(f"give the objects to keep as a list of at most {MAX_OBJECTS} numbers, e.g. [1, 3]")
    return [_object_number(v) for v in values]


def _what(record: dict) -> str:
    """What made an object, in a few words."""
    if record["kind"] == "text":
        return f'text "{record["text"]}"'
    if record["kind"] == "clicks":
        count = len(record.get("points", []))
        refined = f' (refines text "{record["text"]}")' if record.get("text") else ""
        return f"{count} click{'s' if count != 1 else ''}{refined}"
    if record["kind"] == "mask":
        return f"mask video {record.get('file', '')}".strip()
    return "box " + ",".join(map(str, record["box"]))


_PUBLIC = ("id", "kind", "text", "score", "points", "box", "file", "area", "frames", "label", "approximate")


def _public(record: dict) -> dict:
    return {k: record[k] for k in _PUBLIC if k in record}
