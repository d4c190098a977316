"""The Generate tab's fast preview (issue 15): the session's edit LoRA with a step-distilled speed LoRA stacked
on it (4 steps, CFG 1, its own shift; `maskedit.workflow.preview`), through the same GPU call as the full render."""

from __future__ import annotations

from dataclasses import replace

from ..models.presets import GenerateSettings
from .inputs import GenerateResult


class Previews:
    """`Studio.preview`; mixed into `Studio` (needs its `generate` and `model_name`)."""

    def preview_settings(self, preset: str | None = None, speed_lora: str | None = None):
        """The preview's `preview.PreviewSettings`: the speed LoRA from `speed_lora` (a path, a hub
        owner/repo/file.safetensors, or HIGH,LOW for a two-expert base), else $MASKEDIT_SPEED_LORA, else the
        preset's (adapted to the base). MaskEditError with `preview.NO_SPEED_LORA` when none is set — before
        any GPU work."""
        from ..workflow.preview import preview_settings

        chosen = self.preset(preset) if preset else None
        return preview_settings(chosen, (speed_lora or "").strip() or None)

    def preview(self, st, prompt: str, settings: GenerateSettings, *, speed_lora: str | None = None,
                preset: str | None = None, **options) -> GenerateResult:
        """A fast preview of `generate(st, prompt, settings, ...)`: the same edit LoRA, condition, prompt, seed,
        method and LoRA scale, with the speed LoRA for the preview's steps/CFG/shift (they replace the
        settings', its sampler is Euler and it runs no step cache); the speed LoRA is removed afterwards, so the
        next full render is unchanged. The report names the preview's settings ("preview")."""
        chosen = self.preview_settings(preset, speed_lora)
        quick = replace(settings, steps=chosen.steps, guidance_scale=chosen.guidance_scale,
                        flow_shift=chosen.flow_shift, sampler=chosen.sampler, step_cache="off",
                        step_cache_threshold=None)  # what the preview runs: Euler, every evaluation
        return self.generate(st, prompt, quick, preset=preset, preview=chosen, **options)
