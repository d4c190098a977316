"""The high-level Python API of an edit: prepare a clip, train its LoRA, generate the edited video.

What the command line (`maskedit.interfaces.cli.main`) and the app call; it prints nothing and parses no arguments.

    prepared = prepare_clip("clip.mp4", box=(300, 120, 560, 400))          # or mask_video="mask.mp4"
    save_prepared(prepared, "work/prepared")                               # clip, boxes, first_frame.png
    edited_first = load_edited_frame("first_frame_edited.png", prepared.width, prepared.height)
    for event in train_edit_lora(pipe, prepared, "a red car on a road", TrainConfig(), "work/lora"):
        ...                                   # EditTrainingStage / StepEvent / EditTrainingNote / ... events
    frames = generate_edit(pipe, prepared, edited_first, "a red car on a road")
    outputs = write_edit_outputs("work/out", prepared, frames)             # edited.mp4, side_by_side.mp4

Long work reports through events (training: a generator of small dataclasses; generation: a callback per
denoising step) and stops between steps (`should_stop`). Files are written under temporary names and
renamed when complete, so a failed run never leaves an `edited.mp4` or `lora.safetensors` that looks done.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..method import masks
from ..method.conditioning import DEFAULT_TRIGGER, METHOD_IMAGE_VIEW, compose_prompt, inference_condition, stock_condition
from ..defaults import NAIVE_LORA_FOLDER, WAN_NEGATIVE_PROMPT  # noqa: F401  (part of this API)
from ..errors import MaskEditError
from ..models.presets import GENERATION_METHODS, NAIVE_LORA_METHODS, GenerateSettings  # noqa: F401  (part of this API)
from ..media.files import save_npz, write_text
from ..method.experts import EXPERTS, HIGH_NOISE, expert_file_names, has_expert_loras, is_two_expert, make_trainer, save_expert_loras
from ..limits import check_prompt, check_settings
from ..method.lora import ADAPTER_NAME, LORA_WEIGHT_NAME, save_lora, unload_lora
from ..method.pipeline import DEFAULT_SAMPLER, reference_sigmas, use_sampler
from ..method.training import (  # noqa: F401  (STAGE2_REPEATS, stage2_steps, STOCK_CONDITION: part of this API)
    CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, MASK_CONDITION, STAGE2_REPEATS, STOCK_CONDITION, LoraTrainer, StepEvent,
    TrainConfig, plan_stages, restore_encoders, stage2_steps,
)
from ..media.video import Clip, check_frame_count, check_image_size, conform_clip, fit_image, read_image, read_video, write_image, write_video
from ..media.video import read_conformed


METHODS = GENERATION_METHODS
"""Generation methods: the paper's (mask condition + LoRA), stock I2V without LoRA, feature-level blending, and
the naive-LoRA baseline (stock condition + a LoRA trained with the stock condition, `train_edit_lora(naive=True)`)."""

DEFAULT_STAGE2_EPOCHS = TrainConfig.stage2_epochs
DEFAULT_GENERATION_STEPS = GenerateSettings.steps
DEFAULT_GUIDANCE_SCALE = GenerateSettings.guidance_scale
DEFAULT_FLOW_SHIFT = GenerateSettings.flow_shift

PREPARED_JSON = "prepared.json"
CLIP_VIDEO, CLIP_ARRAY = "clip.mp4", "clip.npz"
BOXES_VIDEO, BOXES_ARRAY = "boxes.mp4", "boxes.npz"
TIGHT_ARRAY = "tight.npz"
FIRST_FRAME = "first_frame.png"
FRAMES_FOLDER = "frames"
EDITED_VIDEO = "edited.mp4"
SIDE_BY_SIDE_VIDEO = "side_by_side.mp4"
CHECKPOINTS_FOLDER = "checkpoints"
FINGERPRINT = "fingerprint.json"
PREPARED_FORMAT = 1


# ----- preparing a clip


@dataclass
class PreparedClip:
    """A clip conformed for the model, with the region to edit.

    clip: the conformed clip (4k+1 frames, multiple-of-16 size, its fps). region: bool (F, H, W), the loose
    boxes, True = edit. tight: the segmentation the boxes came from (bool (F, H, W)), None for a box.
    notes: what reading and conforming changed, for the user. source: where it came from (JSON-able).
    """

    clip: Clip
    region: np.ndarray
    tight: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    @property
    def frames(self) -> np.ndarray:
        return self.clip.frames

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames

    @property
    def width(self) -> int:
        return self.clip.width

    @property
    def height(self) -> int:
        return self.clip.height

    @property
    def fps(self) -> float:
        return self.clip.fps

    @property
    def source_size(self) -> tuple[int, int] | None:
        """(width, height) of the video before conforming, when known."""
        if "width" in self.source and "height" in self.source:
            return int(self.source["width"]), int(self.source["height"])
        return None


def prepare_clip(
    video_path: str | os.PathLike,
    mask_video: str | os.PathLike | None = None,
    box: str | tuple[int, int, int, int] | None = None,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    start: int = 0,
    frame_mode: str = "uniform",
    margin: float = masks.BOX_MARGIN,
    min_area: int = masks.MIN_COMPONENT_AREA,
    fit: bool = False,
) -> PreparedClip:
    """Read and conform a clip and its edit region (exactly one of `mask_video` and `box`).

    mask_video: a video, a folder of frames or one image, white = edit; it gets the clip's frame selection
    and geometry (`masks.conform_region`), then becomes loose boxes (`masks.loose_boxes`, margin and
    min_area). box: "x0,y0,x1,y1" or a tuple, in pixels of the *conformed* clip (x1, y1 exclusive), the same
    box on every frame. fit: resize a mask of another shape to the clip instead of refusing it.
    Raises MaskEditError on anything the user must fix.
    """
    if (mask_video is None) == (box is None):
        raise MaskEditError("give the region to edit as either a mask video or a box (exactly one of them)")
    check_settings(num_frames=num_frames, width=width, height=height, start=start, margin=margin, min_area=min_area)
    if num_frames is not None:
        check_frame_count(num_frames)
    clip, source_clip = read_conformed(video_path, num_frames, width, height, frame_mode, start)  # decodes only kept frames
    notes = list(clip.notes)
    source = {"video": str(video_path), "width": source_clip.width, "height": source_clip.height,
              "frames": source_clip.num_frames, "fps": source_clip.fps, "frame_mode": frame_mode, "start": start}

    if box is not None:
        if isinstance(box, str):
            parsed = masks.parse_box(box)
        else:
            try:
                parsed = tuple(int(v) for v in box)
            except (TypeError, ValueError):
                parsed = ()
            if len(parsed) != 4:
                raise MaskEditError(f"the box {box!r} needs four whole numbers x0, y0, x1, y1")
        region = masks.box_region(clip.height, clip.width, parsed, clip.num_frames)
        tight = None
        source["box"] = list(parsed)
    else:
        raw = masks.read_mask_for_clip(mask_video, source_clip, clip.num_frames, frame_mode, start)  # kept frames only
        if fit and raw.shape[1:] != (source_clip.height, source_clip.width) and raw.shape[1:] != (clip.height, clip.width):
            raw = masks.fit_region(raw, source_clip.width, source_clip.height)
            notes.append(f"mask resized to the clip's {source_clip.width}x{source_clip.height} (fit)")
        try:
            tight = masks.conform_region(raw, source_clip, clip.num_frames, clip.width, clip.height, frame_mode, start)
        except MaskEditError as error:
            if raw.shape[1:] in ((source_clip.height, source_clip.width), (clip.height, clip.width)):
                raise
            raise MaskEditError(f"{error}; or use fit (--fit) to resize and centre-crop it to the clip") from None
        region = masks.loose_boxes(tight, margin, min_area)
        source.update(mask_video=str(mask_video), margin=margin, min_area=min_area)
        judged = slice(1, None) if tight.shape[0] > 1 else slice(None)
        if tight[judged].any() and not region[judged].any():
            raise MaskEditError(
                f"every marked part of the mask is smaller than {min_area} pixels, so no box is left; mark the "
                "object larger, or lower the minimum area (--min-area)"
            )
    masks.check_region(region, clip.num_frames, clip.height, clip.width)
    return PreparedClip(clip, region, tight, notes, source)


def save_prepared(prepared: PreparedClip, folder: str | os.PathLike, export_frames: bool = False) -> Path:
    """Write a prepared clip to `folder`: clip.mp4, boxes.mp4 (white = edit), first_frame.png (to edit),
    lossless clip.npz / boxes.npz (/ tight.npz), and prepared.json last. export_frames: also every frame
    as frames/NNN.png (for editing later frames). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PREPARED_JSON).unlink(missing_ok=True)  # the folder is complete again only when this is back
    save_npz(folder / CLIP_ARRAY, frames=prepared.frames)
    save_npz(folder / BOXES_ARRAY, region=np.asarray(prepared.region, dtype=bool))
    if prepared.tight is not None:
        save_npz(folder / TIGHT_ARRAY, region=np.asarray(prepared.tight, dtype=bool))
    else:
        (folder / TIGHT_ARRAY).unlink(missing_ok=True)
    write_video(folder / CLIP_VIDEO, prepared.frames, prepared.fps)
    masks.write_mask_video(folder / BOXES_VIDEO, prepared.region, prepared.fps)
    write_image(folder / FIRST_FRAME, prepared.frames[0])
    if export_frames:
        for old in (folder / FRAMES_FOLDER).glob("*.png"):  # frames of an earlier, longer clip
            old.unlink()
        digits = max(3, len(str(prepared.num_frames - 1)))
        for index, frame in enumerate(prepared.frames):
            write_image(folder / FRAMES_FOLDER / f"{index:0{digits}d}.png", frame)
    info = {
        "format": PREPARED_FORMAT, "fps": prepared.fps, "frames": prepared.num_frames, "width": prepared.width,
        "height": prepared.height, "notes": prepared.notes, "source": prepared.source,
        "created": _now(),
    }
    write_text(folder / PREPARED_JSON, json.dumps(info, indent=2))
    return folder


def load_prepared(folder: str | os.PathLike) -> PreparedClip:
    """Read a folder written by `save_prepared` (the lossless .npz files when present, else the mp4s)."""
    folder = Path(folder)
    info_path = folder / PREPARED_JSON
    if not info_path.is_file():
        raise MaskEditError(
            f"{folder} is not a prepared clip folder (no {PREPARED_JSON}); make one with "
            "`python -m maskedit prepare --video ... --out FOLDER`"
        )
    try:
        info = json.loads(info_path.read_text())
        fps, num_frames = float(info["fps"]), int(info["frames"])
        width, height = int(info["width"]), int(info["height"])
    except (ValueError, KeyError, TypeError) as error:
        raise MaskEditError(f"{info_path} is damaged ({error}); run `prepare` again") from None
    frames = _load_npz(folder / CLIP_ARRAY, "frames")
    if frames is None:
        frames = read_video(folder / CLIP_VIDEO).frames
    region = _load_npz(folder / BOXES_ARRAY, "region")
    if region is None:
        region = masks.read_mask_video(folder / BOXES_VIDEO)
    tight = _load_npz(folder / TIGHT_ARRAY, "region")
    expected = (num_frames, height, width)
    if frames.shape != (*expected, 3) or frames.dtype != np.uint8 or region.shape != expected:
        raise MaskEditError(
            f"the files in {folder} do not match {PREPARED_JSON} ({num_frames} frames of {width}x{height}); "
            "run `prepare` again"
        )
    if tight is not None and tight.shape != expected:
        tight = None
    region = region.astype(bool)
    masks.check_region(region, num_frames, height, width)
    return PreparedClip(Clip(frames, fps, []), region, tight, list(info.get("notes", [])), dict(info.get("source", {})))


def load_edited_frame(path: str | os.PathLike, width: int, height: int, fit: bool = False,
                      source_size: tuple[int, int] | None = None, what: str = "edited frame") -> np.ndarray:
    """Read an edited frame as uint8 (height, width, 3).

    A frame of the prepared size is taken as it is; one of the source video's size (`source_size`,
    (width, height) before conforming) is resized and centre-cropped exactly like the clip's frames; any
    other size is refused, or fitted the same way when `fit`.
    """
    image = read_image(path)
    image_size = (image.shape[1], image.shape[0])
    if image_size != (width, height) and (fit or (source_size is not None and image_size == tuple(source_size))):
        return fit_image(image, width, height)
    check_image_size(image, width, height, what)
    return image


def parse_frame_index(text: str, num_frames: int | None = None) -> int:
    """A later frame's index K (1..num_frames-1 of the prepared clip) from text."""
    try:
        index = int(str(text).strip())
    except ValueError:
        raise MaskEditError(f"the frame number {text!r} is not a whole number; write K=PATH, e.g. 24=frame24.png") from None
    if index == 0:
        raise MaskEditError("frame 0 is the edited first frame itself; edited later frames are numbered 1 and up")
    if index < 0 or (num_frames is not None and index >= num_frames):
        last = f"{num_frames - 1}" if num_frames is not None else "F-1"
        raise MaskEditError(f"the edited later frame number {index} is outside the prepared clip's frames 1..{last}")
    return index


# ----- training


@dataclass
class EditTrainingStage:
    """A training stage begins (after its samples were encoded): stage 1 (clip) or 2 (edited later frames)."""

    stage: int
    total_steps: int
    start_step: int  # > 0 when resumed from a checkpoint
    checkpoint_dir: str


@dataclass
class EditTrainingNote:
    """Something the user should know (resumed, started afresh, encoding)."""

    message: str


@dataclass
class EditTrainingStopped:
    """The run was stopped; its checkpoint is kept and a rerun with the same inputs resumes from it."""

    stage: int
    step: int
    total_steps: int
    checkpoint_dir: str


@dataclass
class EditTrainingDone:
    """The LoRA was saved."""

    lora_path: str
    metadata: dict


EditTrainingEvent = EditTrainingStage | StepEvent | EditTrainingNote | EditTrainingStopped | EditTrainingDone


def train_edit_lora(
    pipe,
    prepared: PreparedClip,
    caption: str,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    trigger: str = DEFAULT_TRIGGER,
    edited_later: dict[int, np.ndarray] | None = None,
    later_captions: dict[int, str] | None = None,
    stage2_epochs: int | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
    base_model: str | None = None,
    window: int | None = None,
    window_stride: int | None = None,
    distributed=None,
    naive: bool | None = None,
    edit_caption: str | None = None,
) -> Iterator[EditTrainingEvent]:
    """Train the edit LoRA into `pipe.transformer` (in place) and save it to `out_dir`; a generator of events.

    The config says what is trained on (`training.plan_stages`): stage 1 (METHOD.md §4) learns the clip's
    motion with the boxes — on the whole clip or on `config.window`-frame windows every `config.window_stride`
    frames (§7); with `edited_later` ({frame index in the prepared clip: edited uint8 (H, W, 3)}) stage 2
    (§5) continues the adapter on the clip plus each edited frame (repeated 9x per epoch; temporal windows
    share the clip's one place, `training.stage2_items`) for `stage2_steps(n, config.stage2_epochs)` steps.
    `config.condition == "stock"` trains the naive-LoRA baseline instead (§8: stock I2V condition, boxes
    unused, no stage 2; lora.json says "condition": "stock"; give it its own `out_dir`). stage2_epochs,
    window, window_stride, naive: when given, override the config's fields of the same meaning.
    Captions (METHOD.md §4–§5; `captioning.training_captions` makes them): `caption` describes the ORIGINAL
    first frame (stage 1 trains on it), `edit_caption` the edited first frame (generation's; recorded in
    lora.json), `later_captions[k]` edited later frame k (its stage-2 sample). A later frame without a
    caption takes `edit_caption` (with a note); without either it is refused. Prompts are
    `compose_prompt(caption, trigger)`.
    Checkpoints go to out_dir/checkpoints/stage1 and stage2; with `resume` a rerun with the same inputs and
    settings continues from them (other inputs start afresh). A stop (should_stop() True, or an exception
    such as KeyboardInterrupt) keeps the checkpoint and saves no LoRA. At the end lora.safetensors,
    lora_comfyui.safetensors and lora.json are written (`maskedit.method.lora.save_lora`); stale ones from an
    earlier run are removed before training starts. Any adapter already on the pipe is replaced.
    distributed: a `maskedit.memory.distributed.DistributedContext` when launched on several processes
    (data-parallel; only the main process writes files).
    """
    config = with_plan(config, window=window, window_stride=window_stride, naive=naive, stage2_epochs=stage2_epochs)
    out_dir = Path(out_dir)
    check_prompt(caption, "caption")
    if config.naive and edited_later:
        raise MaskEditError(
            "the naive-LoRA baseline trains on the clip alone (stock condition, no stage 2); leave out the edited "
            "later frames"
        )
    edited_later = dict(sorted((edited_later or {}).items()))
    later_captions = later_captions or {}
    for index, frame in edited_later.items():
        if not 1 <= index < prepared.num_frames:
            raise MaskEditError(
                f"the edited later frame number {index} is outside the prepared clip's frames 1..{prepared.num_frames - 1}"
            )
        check_image_size(frame, prepared.width, prepared.height, f"edited frame {index}")
    uncaptioned = [k for k in edited_later if not (later_captions.get(k) or "").strip()]
    if uncaptioned and not (edit_caption or "").strip():
        raise MaskEditError(
            f"edited later frame(s) {', '.join(map(str, uncaptioned))} have no caption: stage 2 trains each under its "
            "own caption; give one per frame (--later-prompt K=TEXT) or the edited first frame's caption"
        )
    later_captions = {k: (later_captions.get(k) or "").strip() or edit_caption for k in edited_later}
    base_model = base_model or getattr(pipe, "name_or_path", None) or "unknown"
    prompt = compose_prompt(caption, trigger)
    later = [(k, frame, compose_prompt(later_captions[k], trigger)) for k, frame in edited_later.items()]
    stages = plan_stages(prepared.frames, prepared.region, prompt, config, base_model, later)
    main = distributed is None or distributed.is_main

    if main:
        remove_lora_files(out_dir)
    unload_lora(pipe)
    losses: list[float] = []
    for k in uncaptioned:
        yield EditTrainingNote(f"edited frame {k} has no caption of its own: trained under the edited first frame's")
    try:
        for stage in stages:
            checkpoint_dir = out_dir / CHECKPOINTS_FOLDER / f"stage{stage.number}"
            fresh = _claim_checkpoints(checkpoint_dir, stage.fingerprint, resume) if main else None
            if distributed is not None:
                distributed.barrier()  # every process resumes from what the main one kept
            if fresh:
                yield EditTrainingNote(fresh)
            yield EditTrainingNote(f"stage {stage.number}: encoding {len(stage.items)} sample(s)")
            restore_encoders(pipe)  # the previous stage's trainer moved them off the GPU
            device = next(pipe.transformer.parameters()).device
            trainer = make_trainer(pipe, stage.items, stage.config, checkpoint_dir, device=device,
                                   distributed=distributed)
            if resume and trainer.resume():
                yield EditTrainingNote(
                    f"stage {stage.number}: resumed from the checkpoint at step {trainer.state.step} of "
                    f"{stage.config.steps} in {checkpoint_dir}"
                )
            yield EditTrainingStage(stage.number, stage.config.steps, trainer.state.step, str(checkpoint_dir))
            run = trainer.run(should_stop)
            try:
                for event in run:
                    yield event
            finally:
                run.close()  # a stop or an interrupt here still writes the trainer's checkpoint
            losses = trainer.state.losses
            if trainer.state.step < stage.config.steps:
                yield EditTrainingStopped(stage.number, trainer.state.step, stage.config.steps, str(checkpoint_dir))
                return
    finally:
        restore_encoders(pipe)

    window_used = config.window_for(prepared.num_frames)
    metadata = {
        "base_model": base_model,
        "rank": config.rank,
        "alpha": config.alpha,
        "steps": config.steps,
        "stage2_steps": stages[1].config.steps if len(stages) > 1 else 0,
        "stage2_frames": list(edited_later),
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "frames": prepared.num_frames,
        "width": prepared.width,
        "height": prepared.height,
        "fps": prepared.fps,
        "trigger": trigger,
        "caption": caption,  # of the original first frame (what stage 1 trained on)
        "edit_caption": edit_caption,  # of the edited first frame (what generation uses), when known
        "later_captions": {str(k): later_captions[k] for k in edited_later},
        "final_loss": losses[-1] if losses else None,
        "created": _now(),
        "trainer": "maskedit",
        "settings": asdict(config),  # the whole TrainConfig: `TrainConfig.from_dict` rebuilds it
    }
    if window_used:
        metadata.update(window=window_used, window_stride=config.window_stride)
    if config.naive:
        metadata.update(condition=STOCK_CONDITION, method="naive-lora")
    if distributed is not None:
        metadata["processes"] = distributed.world_size
        if not distributed.is_main:
            distributed.barrier()  # wait for the main process to write the files
            yield EditTrainingDone(str(out_dir / LORA_WEIGHT_NAME), metadata)
            return
    if is_two_expert(pipe):  # one file per expert (maskedit.method.experts); the event names the high-noise one
        path = save_expert_loras(pipe, out_dir, metadata)[HIGH_NOISE]
    else:
        path = save_lora(pipe, out_dir, metadata)
    if distributed is not None:
        distributed.barrier()
    yield EditTrainingDone(str(path), metadata)


def with_plan(config: TrainConfig, *, window: int | None = None, window_stride: int | None = None,
              naive: bool | None = None, stage2_epochs: int | None = None) -> TrainConfig:
    """`config` with the sample-choice fields that are given (None: keep the config's)."""
    changes = check_settings(window=window, window_stride=window_stride, stage2_epochs=stage2_epochs)
    if naive is not None:
        changes["condition"] = STOCK_CONDITION if naive else MASK_CONDITION
    return replace(config, **changes) if changes else config


def _claim_checkpoints(folder: Path, fingerprint: str, resume: bool) -> str | None:
    """Make `folder` hold checkpoints of this run only; returns a note when old ones were discarded."""
    marker = folder / FINGERPRINT
    note = None
    kept = [folder, *(folder / expert for expert in EXPERTS)]  # two-expert runs keep one per expert
    has_checkpoint = any((sub / CHECKPOINT_STATE).exists() for sub in kept)
    same = marker.is_file() and marker.read_text().strip() == fingerprint
    if has_checkpoint and not (resume and same):
        why = "--no-resume was given" if not resume else "they were made from other inputs or settings"
        note = f"starting afresh: the checkpoints in {folder} are not used ({why})"
    if not (resume and same):
        for sub in kept:
            for name in (CHECKPOINT_STATE, CHECKPOINT_WEIGHTS):
                (sub / name).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(marker, fingerprint)
    return note


def remove_lora_files(folder: str | os.PathLike) -> None:
    """Delete lora.safetensors, lora_comfyui.safetensors and lora.json of an earlier run in `folder`."""
    from ..method.lora import COMFYUI_WEIGHT_NAME, METADATA_NAME

    for name in (LORA_WEIGHT_NAME, COMFYUI_WEIGHT_NAME, METADATA_NAME, *expert_file_names()):
        (Path(folder) / name).unlink(missing_ok=True)


# ----- generation


@dataclass
class GenerationStep:
    """Reported after every denoising step (step counts from 1)."""

    step: int
    total_steps: int
    seconds: float
    elapsed: float


class GenerationStopped(MaskEditError):
    """Generation was stopped (should_stop) before it finished; nothing was produced."""


def has_edit_lora(pipe) -> bool:
    """True when the pipe's transformer carries the edit adapter (trained or loaded)."""
    return ADAPTER_NAME in (getattr(pipe.transformer, "peft_config", None) or {})


def is_naive_lora(metadata: dict) -> bool:
    """True when a LoRA's lora.json (`lora.read_metadata`) says it is a naive-baseline LoRA (stock condition)."""
    return (metadata or {}).get("condition") == STOCK_CONDITION


def set_flow_shift(pipe, shift: float) -> None:
    """Rebuild the pipe's scheduler from its config with another flow shift (`flow_shift` or `shift`)."""
    scheduler = pipe.scheduler
    config = scheduler.config
    if "flow_shift" in config:
        pipe.scheduler = type(scheduler).from_config(config, flow_shift=shift)
    elif "shift" in config:
        pipe.scheduler = type(scheduler).from_config(config, shift=shift)
    else:
        raise MaskEditError(f"the scheduler {type(scheduler).__name__} has no flow shift to set")


def check_guidance_scale_2(pipe, guidance_scale_2: float | None) -> None:
    """Refuse a low-noise guidance scale for a base without a low-noise expert (Wan2.1: one transformer)."""
    GenerateSettings(guidance_scale_2=guidance_scale_2).check_base(is_two_expert(pipe))


def generate_edit(
    pipe,
    prepared: PreparedClip,
    edited_first_frame: np.ndarray,
    caption: str,
    steps: int = DEFAULT_GENERATION_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    flow_shift: float = DEFAULT_FLOW_SHIFT,
    seed: int = 0,
    lora_scale: float = 1.0,
    method: str = "mask-lora",
    trigger: str = DEFAULT_TRIGGER,
    negative_prompt: str = WAN_NEGATIVE_PROMPT,
    callback: Callable[[GenerationStep], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    speed_lora_weight: float = 1.0,
    sampler: str = DEFAULT_SAMPLER,
    image_view: str = METHOD_IMAGE_VIEW,
    guidance_scale_2: float | None = None,
) -> np.ndarray:
    """Generate the edited clip (METHOD.md §6); returns uint8 (F, H, W, 3).

    method "mask-lora": the edit LoRA on the pipe (trained or loaded; required) with the mask condition —
    the clip with boxes emptied and frame 0 = the edited frame. "no-lora": stock I2V from the edited first
    frame, adapter disabled, prompt without the trigger. "feature-blend": the paper's blending baseline (App.
    B.1) — stock I2V condition plus feature-level blending of the source clip outside the boxes (Eq. 3, held
    at every step whatever the sampler), with the naive baseline's LoRA. "naive-lora": the naive baseline
    (METHOD.md §8) — stock I2V from the edited first frame. Both `NAIVE_LORA_METHODS` need the adapter on the
    pipe to be a LoRA trained with the stock condition (`train_edit_lora(naive=True)`, loaded by the caller:
    this function cannot tell the two apart; `is_naive_lora(lora.json)` can).
    sampler: "euler" (the reference code's flow-matching Euler with its schedule, `pipeline.reference_sigmas`)
    or "unipc" (Wan's default); flow_shift applies to both. image_view: the CLIP view ("full" = the method's,
    as in training; "crop" = diffusers'). guidance_scale_2: the low-noise expert's CFG on a two-expert base
    (None: `guidance_scale`); a one-expert base refuses it before any work.
    The prompt is `compose_prompt(caption, trigger)`. callback receives a GenerationStep after each
    denoising step; should_stop() True stops after the current step (GenerationStopped).
    A speed LoRA loaded on the pipe (`maskedit.models.speed.load_speed_lora`) stays active beside the edit
    LoRA with `speed_lora_weight`.
    """
    import PIL.Image
    import torch

    from ..runtime import quiet_transformers

    GenerateSettings(steps=steps, guidance_scale=guidance_scale, flow_shift=flow_shift, lora_scale=lora_scale,
                     seed=seed, method=method, sampler=sampler,
                     guidance_scale_2=guidance_scale_2)  # checks every setting before any work
    check_settings(speed_lora_weight=speed_lora_weight)
    check_guidance_scale_2(pipe, guidance_scale_2)
    check_image_size(edited_first_frame, prepared.width, prepared.height, "edited first frame")
    has_lora = has_edit_lora(pipe)
    if method == "mask-lora" and not has_lora:
        raise MaskEditError(
            "the mask-lora method needs the edit LoRA: train one first, or load one (--lora FOLDER); "
            "use the no-lora method to generate without one"
        )
    if method in NAIVE_LORA_METHODS and not has_lora:
        raise MaskEditError(
            f"the {method} method needs the naive baseline's LoRA (trained with the stock condition): train one "
            "(`train --naive`) and load it (--lora FOLDER); use the no-lora method to generate without one"
        )
    if method == "no-lora":
        prompt = compose_prompt(caption, "")
        condition = stock_condition(edited_first_frame, prepared.num_frames, prompt)
    else:
        prompt = compose_prompt(caption, trigger)
        if method == "mask-lora":
            condition = inference_condition(prepared.frames, prepared.region, edited_first_frame, prompt)
        else:
            condition = stock_condition(edited_first_frame, prepared.num_frames, prompt)
    extra = {}
    if method == "feature-blend":
        extra = dict(blend_source_video=prepared.frames, blend_keep_mask=masks.keep_mask_from_region(prepared.region))

    started = time.perf_counter()
    last = [started]

    def on_step(pipeline, step, timestep, callback_kwargs):
        now = time.perf_counter()
        if callback is not None:
            callback(GenerationStep(step + 1, steps, now - last[0], now - started))
        last[0] = now
        if should_stop is not None and step + 1 < steps and should_stop():
            raise GenerationStopped("generation was stopped before it finished; nothing was written")
        return callback_kwargs

    use_sampler(pipe, sampler, flow_shift)
    if sampler == "euler":
        extra["sigmas"] = reference_sigmas(steps)
    if has_lora:
        if method == "no-lora":
            pipe.disable_lora()
        else:
            from ..models.speed import set_lora_weights

            set_lora_weights(pipe, edit=float(lora_scale), speed=float(speed_lora_weight))
    try:
        with quiet_transformers():
            output = pipe(
                image=PIL.Image.fromarray(condition.image),
                prompt=prompt,
                negative_prompt=negative_prompt,
                condition_video=condition.condition_video,
                condition_mask=condition.keep_mask,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                guidance_scale_2=guidance_scale_2,
                generator=torch.Generator(device="cpu").manual_seed(int(seed)),
                output_type="np",
                callback_on_step_end=on_step,
                image_view=image_view,
                **extra,
            )
    finally:
        if has_lora and method == "no-lora":
            pipe.enable_lora()
    video = np.asarray(output.frames[0], dtype=np.float32)
    return np.clip(np.round(video * 255.0), 0, 255).astype(np.uint8)


# ----- results


def side_by_side(original: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """(F, H, W1, 3) and (F, H, W2, 3) uint8 → (F, H, W1 + W2, 3): original on the left, edit on the right."""
    original, edited = np.asarray(original), np.asarray(edited)
    if original.shape[:2] != edited.shape[:2]:
        raise MaskEditError(
            f"cannot put {original.shape[0]} frames of height {original.shape[1]} beside {edited.shape[0]} frames "
            f"of height {edited.shape[1]}; they need the same frame count and height"
        )
    return np.concatenate([original, edited], axis=2)


@dataclass
class EditOutputs:
    """The files of a finished edit and its background PSNR (dB; `metrics.psnr` outside the boxes, frames 1..:
    inf when identical there, nan when the boxes cover everything)."""

    edited: Path
    side_by_side: Path
    background_psnr: float


def remove_edit_outputs(out_dir: str | os.PathLike) -> None:
    """Delete edited.mp4 and side_by_side.mp4 of an earlier run (before a new one starts)."""
    for name in (EDITED_VIDEO, SIDE_BY_SIDE_VIDEO):
        (Path(out_dir) / name).unlink(missing_ok=True)


def write_edit_outputs(out_dir: str | os.PathLike, prepared: PreparedClip, edited: np.ndarray) -> EditOutputs:
    """Write side_by_side.mp4, then edited.mp4 (at the clip's fps) to out_dir."""
    out_dir = Path(out_dir)
    if edited.shape != prepared.frames.shape:
        raise MaskEditError(f"the edited video is {edited.shape} but the clip is {prepared.frames.shape}")
    write_video(out_dir / SIDE_BY_SIDE_VIDEO, side_by_side(prepared.frames, edited), prepared.fps)
    write_video(out_dir / EDITED_VIDEO, edited, prepared.fps)
    from ..media.metrics import psnr

    judged = slice(1, None) if prepared.num_frames > 1 else slice(None)  # frame 0 is the user's edit
    return EditOutputs(out_dir / EDITED_VIDEO, out_dir / SIDE_BY_SIDE_VIDEO,
                       psnr(edited[judged], prepared.frames[judged], ~prepared.region[judged]))


# ----- models and LoRA files


def default_model() -> str:
    """"tiny" without a CUDA GPU, else the real Wan2.1 I2V model."""
    import torch

    from ..models.loading import DEFAULT_MODEL_ID, TINY

    return DEFAULT_MODEL_ID if torch.cuda.is_available() else TINY


def resolve_lora_path(path: str | os.PathLike) -> Path:
    """The LoRA file for a file or folder path (a folder means its lora.safetensors); checked to exist
    and to be safetensors, so a wrong path fails before a model is loaded."""
    path = Path(path)
    if path.is_dir() and has_expert_loras(path):  # a two-expert (Wan2.2) LoRA: the folder is the LoRA
        return path
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
        if not path.is_file():
            raise MaskEditError(
                f"the folder {path.parent} holds no {LORA_WEIGHT_NAME}; give the folder `train` wrote, or the file itself"
            )
    if path.suffix != ".safetensors":
        raise MaskEditError(f"{path.name} is not a .safetensors file; only safetensors LoRA files are loaded")
    if not path.is_file():
        raise MaskEditError(f"no LoRA file at {path}; give the folder `train` wrote, or its lora.safetensors")
    return path


# ----- small helpers


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_npz(path: Path, key: str) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data[key])
    except (OSError, ValueError, KeyError) as error:
        raise MaskEditError(f"{path} is damaged ({error}); run `prepare` again") from None
