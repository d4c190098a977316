"""Training in the background while the user edits (issue 8): the session's `BackgroundJob` follows its inputs
(started when the masks are confirmed and a caption is given, cancelled and discarded when they change),
Train follows it instead of training twice, and Generate waits for it or takes its latest checkpoint.
`Studio` inherits these methods; they use its jobs, cache and GPU calls."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

from ..media.clipstore import link_or_copy
from ..workflow import lora_cache, prepare, session
from .background_job import BackgroundJob
from ..errors import MaskEditError
from ..limits import check_flag
from ..workflow.generate import GenerationStopped
from .inputs import TrainInputs, TrainView, checkpoint_losses, lora_files
from .state import PARTIAL, TRAINED, UPLOADED, SessionState


class BackgroundTraining:
    """The background-training methods of `Studio` (a mixin: `self` is the Studio)."""

    def cancel_background(self, st: SessionState, why: str) -> str:
        """Cancel the session's background run (its inputs changed) and forget its LoRA; its unfinished run is
        discarded. Returns a line for the user ("" when nothing was running)."""
        job = self.jobs.pop(st.folder, None)
        if job is None:
            return ""
        st.forget_lora_unless_uploaded(job.key)
        if not job.active:
            return ""
        cache = self.cache(st)

        def discard():
            entry = cache.get(job.key)
            if entry is not None and entry.status != lora_cache.FINISHED:
                cache.remove(job.key)

        job.cancel(discard)
        return f"⚠️ {why[:1].upper() + why[1:]}: the background training for the old inputs was cancelled and discarded."

    def background(self, st: SessionState, enabled: bool, inputs: TrainInputs) -> str:
        """Make the session's background run match the current inputs: start it (masks confirmed and a caption
        given), keep it (same key), or cancel and replace it (frames, boxes, caption or settings changed).
        Returns the status line. Every input is checked before a run starts (`TrainInputs.cleaned`)."""
        enabled = check_flag(enabled, "background-training checkbox")
        st.background = enabled
        job = self.jobs.get(st.folder)
        if not enabled:
            if job is not None and job.active:
                job.request_stop()
                return ("Background training is **off**: the run stops after its current step; its checkpoint is "
                        "kept (Train → Start continues it).")
            return "Background training is **off**: train in step 4."
        inputs = inputs.cleaned()
        if not (self.sub(st, session.PREPARED_FOLDER) / prepare.PREPARED_JSON).is_file():
            return "Background training starts as soon as the masks are confirmed (step 2)."
        if not inputs.caption or not str(inputs.caption).strip():
            note = self.cancel_background(st, "the caption was cleared") if job is not None else ""
            return ((note + "  \n") if note else "") + (
                "Background training waits for the **caption of the ORIGINAL first frame** (step 3).")
        inputs, later_captions, _ = self.training_captions(st, inputs)  # later frames without one: captioned now
        prepared_dir = self.prepared_dir(st)
        prepared = prepare.load_prepared(prepared_dir)
        config, notes = self.train_config(inputs, prepared.num_frames, self.windows(st))
        key, parts, _ = self._key(st, inputs, config, st.later, later_captions=later_captions)
        if job is not None and job.key == key and job.status in ("queued", "training", "done"):
            return self.background_text(job.snapshot())
        note = ""
        if job is not None and job.key != key:
            changed = lora_cache.changed_parts(job.parts, parts) or ["the inputs"]
            what = " and ".join([", ".join(changed[:-1]), changed[-1]] if len(changed) > 1 else changed)
            note = self.cancel_background(st, f"{what} changed") or f"ℹ️ {what[:1].upper() + what[1:]} changed."
        elif job is not None:
            self.jobs.pop(st.folder, None)
        if st.lora_key and st.lora_key != key:
            st.forget_lora_unless_uploaded()
        job = self._start_job(st, key, parts, prepared_dir, inputs, config, later_captions)
        job.progress.messages.extend(n for n in notes if "windows" in n)
        return ((note + "  \n") if note else "") + self.background_text(job.snapshot())

    def _start_job(self, st: SessionState, key: str, parts: dict, prepared_dir, inputs: TrainInputs,
                   config, later_captions: dict | None = None) -> BackgroundJob:
        cache = self.cache(st)
        entry = cache.lookup(key)
        stop_file = Path(st.folder) / f"stop_background_{key}"
        if entry is not None and entry.status == lora_cache.FINISHED:
            job = BackgroundJob.finished(key, str(entry.lora_path), f"Reusing the cached LoRA {key} (same clip, "
                                         "boxes, caption and settings): no training needed.", stop_file, parts)
            st.use_lora(str(entry.lora_path), TRAINED, key)
            self.jobs[st.folder] = job
            return job
        # the run reads its own copy of the inputs: a later segmentation may rewrite prepared/ meanwhile
        inputs_dir = self.sub(st, "runs") / key
        shutil.rmtree(inputs_dir, ignore_errors=True)
        shutil.copytree(prepared_dir, inputs_dir, copy_function=link_or_copy)  # a long clip's arrays: linked
        later = {k: str(session.copy_into(inputs_dir, v, f"frame_{k}.png")) for k, v in st.later.items()}
        request = self.chunk_request(st, inputs_dir, inputs, config, later, stop_file, True, later_captions)
        job = BackgroundJob(key, self._run_chunks(request), stop_file, resume=True, parts=parts,
                            history=lambda stage: checkpoint_losses(cache.path(key), stage))
        if entry is not None:
            job.progress.messages.append(f"Resuming the cached run {key} from step {entry.step} of {entry.total_steps}.")
        self.jobs[st.folder] = job
        if self.background_driver == "thread":
            job.start()
        return job

    @staticmethod
    def background_text(snap: dict | None) -> str:
        if not snap:
            return "No background training."
        status = snap["status"]
        if status == "training" and snap.get("phase"):  # what it does now: encoding, step k / n, saving
            head, detail = snap["phase"]
            line = f"**Background training: {head}** — {detail}"
        else:
            line = f"**Background training: {status}**"
            if snap["total_steps"]:
                line += f" — step {snap['step']} / {snap['total_steps']}"
        if status == "done":
            line += " — the LoRA is ready: generate as many edits as you like."
        elif status in ("queued", "training"):
            line += " — edit the first frame meanwhile; Generate waits for it."
        if snap.get("error"):
            line += f"  \n⚠️ {snap['error']}"
        return line + "".join(f"  \n{m}" for m in snap["messages"][-2:])

    def background_snapshot(self, st: SessionState | None) -> dict | None:
        job = self.jobs.get(st.folder) if st is not None else None
        return job.snapshot() if job is not None else None

    def drive_background(self, st: SessionState | None) -> Iterator[dict]:
        """ZeroGPU: run the background job's next chunk from the session's own call; yields snapshots."""
        job = self.jobs.get(st.folder) if st is not None else None
        if job is not None:
            yield from job.drive_one()

    @property
    def has_running_jobs(self) -> bool:
        return any(job.active for job in self.jobs.values())

    def training_status(self, st: SessionState) -> dict:
        snap = self.background_snapshot(st) or {"status": "none"}
        shown = {name: self.shown_path(st, snap[name]) for name in ("lora", "partial") if snap.get(name)}
        return dict(snap, **shown, lora_in_use=self.shown_path(st, st.lora), background=bool(st.background))

    def follow(self, job: BackgroundJob, st: SessionState) -> Iterator[TrainView]:
        """/train while the background run trains the same thing: stream its progress instead of training twice."""
        while True:
            if self.background_driver == "session":
                for _ in job.drive_one():
                    pass
            ended = job.wait(0.25)
            snap = job.snapshot()
            files = None
            if ended and snap["lora"]:
                st.use_lora(snap["lora"], TRAINED, job.key)
                files = lora_files(Path(snap["lora"]).parent)
            text = self.background_text(snap).replace("Background training", "Training (started in the background)")
            from .progress import loss_rows

            phase = ("done" if snap["lora"] else "stopped") if ended else "training"
            yield TrainView(loss_rows(snap["steps"], snap["losses"]), text,
                            {"step": snap["steps"], "loss": snap["losses"]}, files, phase=phase,
                            done_of=(snap["step"], snap["total_steps"]) if snap["total_steps"] else None)
            if ended:
                return

    def wait_for_background(self, st: SessionState, use_checkpoint: bool, progress=None,
                            stop_file=None) -> Iterator[tuple]:
        """Before generating: wait for the session's background run (or stop it and use its latest checkpoint),
        then make its LoRA the session's LoRA. A generator: it yields ("waiting", text) about twice a second while
        the run trains, so a caller that closes it (a cancelled call) stops waiting at once; the run itself goes
        on. progress((step, total), desc) reports while waiting. stop_file: Cancel's file (`stop_generation`):
        when it appears the wait ends with `GenerationStopped` and nothing is generated."""
        job = self.jobs.get(st.folder)
        if job is None or st.lora_source == UPLOADED:
            return
        if job.active and use_checkpoint:
            job.request_stop()
        while job.active:
            if stop_file is not None and Path(stop_file).exists():
                raise GenerationStopped("generation was cancelled while it waited for the background training; "
                                          "nothing was generated (the training goes on)")
            ran = False
            if self.background_driver == "session":
                for snap in job.drive_one():
                    ran = True
                    if progress is not None and snap["total_steps"]:
                        progress((snap["step"], snap["total_steps"]), "training the LoRA")
            if not ran:
                job.wait(0.5)
                snap = job.snapshot()
                if progress is not None and snap["total_steps"]:
                    progress((snap["step"], snap["total_steps"]), "waiting for the background training")
            yield "waiting", "waiting for the background training"
        if job.status == "done":
            st.use_lora(job.lora, TRAINED, job.key)
        elif job.status == "stopped" and job.partial:
            st.use_lora(job.partial, PARTIAL, job.key)
            st.resume_background = True  # after this generation, training goes on from the checkpoint
        elif job.status == "failed":
            raise MaskEditError(f"the background training failed: {job.error}")

    def resume_background(self, st: SessionState) -> None:
        job = self.jobs.get(st.folder)
        resume, st.resume_background = st.resume_background, False
        if resume and job is not None and job.status == "stopped" and st.background:
            job = job.resumed()
            self.jobs[st.folder] = job
            if self.background_driver == "thread":
                job.start()
