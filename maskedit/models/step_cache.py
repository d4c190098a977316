"""Step caching: a speed option of generation that skips transformer evaluations whose result a cache can
stand in for, through diffusers' own hook machinery (`diffusers.hooks`: `HookRegistry`, `ModelHook`,
`StateManager`). Off by default: generation is then exact (no hook is added; bit for bit the uncached run).

    with step_cache(pipe, "magcache", steps=30) as stats:      # on `pipe.transformer` for this call only
        pipe(...)
    stats.evaluations, stats.full, stats.skipped                # e.g. 60, 26, 34 (30 steps with CFG)

Both caches skip a whole evaluation (all blocks) and add the residual of the last full one (output of the
last block − input of the first), per CFG branch (diffusers' `cache_context("cond")` / `("uncond")`); they
differ in when they skip:

- "magcache": diffusers' `MagCacheConfig` (`apply_mag_cache`) with MagCache's published magnitude ratios for
  Wan2.1-I2V-14B 480P / 720P (github.com/Zehong-Ma/MagCache, `MagCache4Wan2.1/magcache_generate.py`, the cond
  entries, calibrated at 40 steps; diffusers resizes them to the step count by nearest neighbour) and its Wan
  I2V 480P setting E012K4R02 (threshold 0.12, at most 4 skips in a row, the first 20% of the steps always run).
  The schedule depends on the ratios alone, so `magcache_schedule` tells beforehand which steps run — the
  planner counts them exactly.
- "teacache": the rule the reference samples with (DiffSynth's TeaCache, threshold 0.275): the relative L1
  change of the time-embedding modulation (the blocks' `temb`) since the previous step, rescaled by a
  polynomial fitted per checkpoint (DiffSynth's coefficients for Wan2.1-I2V-14B 480P / 720P), accumulated;
  a step runs when the sum reaches the threshold (then it restarts), and the first and last steps always run.
  The indicator depends on the timestep and the checkpoint's time embedder only, so the schedule is fixed
  per checkpoint and step schedule — but it needs the real weights to know (`full_share`
  assumes a share for the planner).

Both refuse two-expert bases (Wan2.2-A14B): no ratios or coefficients are published for its experts here.
State lives only while the context is open: the hooks are added on entry and removed in a `finally` (and any
cache another caller left on the transformer is removed first), so an interrupted generation never leaks into
the next one. A transformer whose blocks are streamed (`memory.offload.BlockStreamer`) does not copy the
weights of blocks a skipped evaluation does not run (`offload.SKIP_BLOCKS_ATTRIBUTE`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from ..defaults import DEFAULT_STEP_CACHE, STEP_CACHES
from ..errors import MaskEditError

STEP_CACHE_THRESHOLDS = {"magcache": 0.12, "teacache": 0.275}
"""Default thresholds: MagCache's Wan2.1-I2V-480P setting (E012K4R02) and the reference's TeaCache 0.275."""
MAGCACHE_MAX_SKIP_STEPS = 4
MAGCACHE_RETENTION_RATIO = 0.2

# MagCache4Wan2.1/magcache_generate.py (Zehong-Ma/MagCache): `mag_ratios` of i2v-14B, every other entry (the cond
# pass; the uncond entries differ in the 4th decimal), with its leading 1.0 pad; 40 steps.
MAG_RATIOS = {
    "480p": (1.0, 0.98783, 0.97559, 0.98311, 0.98202, 0.9888, 0.98762, 0.98957, 0.99052, 0.99383, 0.98857, 0.99065,
             0.98845, 0.99057, 0.98957, 0.98601, 0.98823, 0.98756, 0.98808, 0.98721, 0.98571, 0.98543, 0.98157,
             0.98411, 0.97952, 0.98149, 0.9774, 0.97825, 0.97355, 0.97085, 0.97056, 0.96588, 0.96113, 0.9567,
             0.94961, 0.93973, 0.93217, 0.91878, 0.90955, 0.92617),
    "720p": (1.0, 0.99428, 0.98588, 0.98273, 0.99018, 0.98911, 0.98646, 0.99454, 0.9891, 0.99124, 0.99102, 0.99215,
             0.99515, 0.99576, 0.99068, 0.99097, 0.99166, 0.99041, 0.99201, 0.99101, 0.98599, 0.98845, 0.98848,
             0.98862, 0.98718, 0.98497, 0.98264, 0.98389, 0.97938, 0.97535, 0.97498, 0.973, 0.96827, 0.96261,
             0.95335, 0.94649, 0.93397, 0.91636, 0.89088, 0.8679),
}
# DiffSynth-Studio's `TeaCache.coefficients_dict` (diffsynth/pipelines/wan_video*.py): numpy.poly1d coefficients,
# highest power first, mapping the raw relative L1 change of the modulation to an estimate of the output's.
TEACACHE_COEFFICIENTS = {
    "480p": (2.57151496e+05, -3.54229917e+04, 1.40286849e+03, -1.35890334e+01, 1.32517977e-01),
    "720p": (8.10705460e+03, 2.13393892e+03, -3.72934672e+02, 1.66203073e+01, -4.17769401e-02),
}
TEACACHE_ASSUMED_FULL_SHARE = 0.4
"""The share of evaluations TeaCache runs in full, ASSUMED for the planner (its schedule needs the real time
embedder): MagCache4Wan2.1's README measured TeaCache 0.26 on Wan2.1-I2V-14B-480P at 5 min 22 s against
13 min 20 s uncached (40 steps, an A800), ≈ 40% of the time."""

_TEACACHE_HEAD, _TEACACHE_BLOCK = "maskedit_teacache_head", "maskedit_teacache_block"


@dataclass
class StepCacheStats:
    """What a generation's transformer did: `evaluations` (calls: steps × CFG branches), `full` (those that
    ran every block); `kind` and `threshold` as used. Filled while the `step_cache` context is open."""

    kind: str
    threshold: float | None
    evaluations: int = 0
    full: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return self.evaluations - self.full

    def as_dict(self) -> dict:
        return {"step_cache": self.kind, "step_cache_threshold": self.threshold, "evaluations": self.evaluations,
                "full_evaluations": self.full, "skipped_evaluations": self.skipped}

    @classmethod
    def from_dict(cls, data: dict) -> "StepCacheStats":
        """The stats from `as_dict()` (or a report holding its keys)."""
        return cls(data.get("step_cache", "off"), data.get("step_cache_threshold"), int(data.get("evaluations", 0)),
                   int(data.get("full_evaluations", 0)))

    def describe(self) -> str:
        if self.kind == "off":
            return f"step cache off: {self.evaluations} transformer evaluations, all run"
        share = f" ({self.skipped / self.evaluations:.0%})" if self.evaluations else ""
        return (f"step cache {self.kind} (threshold {self.threshold:g}): {self.skipped} of {self.evaluations} "
                f"transformer evaluations skipped{share}")


def default_threshold(kind: str) -> float | None:
    """The threshold a cache uses when none is given (None for "off")."""
    return STEP_CACHE_THRESHOLDS.get(kind)


def check_step_cache(kind: str, two_experts: bool = False) -> None:
    """MaskEditError for an unknown cache or a cache on a two-expert base (no calibration for its experts)."""
    if kind not in STEP_CACHES:
        raise MaskEditError(f"the step cache {kind!r} is unknown; use one of {', '.join(STEP_CACHES)}")
    if kind != "off" and two_experts:
        raise MaskEditError(
            f"step caching ({kind}) has no calibration for a two-expert base (Wan2.2-A14B): MagCache's ratios and "
            "TeaCache's coefficients are fitted to Wan2.1-I2V; set the step cache to off")


def model_key(model_name: str | None) -> str:
    """"720p" for a Wan2.1-I2V-14B-720P checkpoint (by its name or folder), else "480p": which published ratios /
    coefficients apply (they are fitted per checkpoint)."""
    return "720p" if "720p" in str(model_name or "").lower() else "480p"


def resized_ratios(ratios, steps: int) -> list[float]:
    """`ratios` resized to `steps` entries by nearest neighbour, as diffusers' `mag_cache.nearest_interp` does
    (index round(i · (n − 1) / (steps − 1)); one step takes the last ratio)."""
    ratios, steps = list(ratios), int(steps)
    if steps == len(ratios):
        return ratios
    if steps == 1:
        return ratios[-1:]
    scale = (len(ratios) - 1) / (steps - 1)
    return [ratios[int(round(i * scale))] for i in range(steps)]


def magcache_schedule(steps: int, threshold: float | None = None, key: str = "480p",
                      max_skip_steps: int = MAGCACHE_MAX_SKIP_STEPS,
                      retention_ratio: float = MAGCACHE_RETENTION_RATIO) -> list[bool]:
    """Which of `steps` steps run in full under MagCache (True = run), per CFG branch: the rule of diffusers'
    `MagCacheHeadHook` on the ratios `MAG_RATIOS[key]` resized to `steps` (`resized_ratios`). Torch-free."""
    threshold = STEP_CACHE_THRESHOLDS["magcache"] if threshold is None else float(threshold)
    ratios = resized_ratios(MAG_RATIOS[key], steps)
    retention = int(retention_ratio * steps + 0.5)
    ratio, error, skipped, have_residual, runs = 1.0, 0.0, 0, False, []
    for step in range(int(steps)):
        run = True
        if step >= retention:
            ratio *= ratios[step]
            skipped += 1
            error += abs(1.0 - ratio)
            if have_residual and error <= threshold and skipped <= max_skip_steps:
                run = False
            else:
                ratio, error, skipped = 1.0, 0.0, 0
        runs.append(run)
        have_residual = True
    return runs


def full_share(kind: str, steps: int, threshold: float | None = None, key: str = "480p") -> tuple[float, str | None]:
    """(the share of transformer evaluations that run in full, a note when it is assumed): 1 for "off", exact for
    "magcache" (`magcache_schedule`), TEACACHE_ASSUMED_FULL_SHARE for "teacache" (at least its first and last
    steps). Torch-free: the planner and the ZeroGPU duration use it."""
    steps = max(int(steps), 1)
    if kind == "off":
        return 1.0, None
    if kind == "magcache":
        return sum(magcache_schedule(steps, threshold, key)) / steps, None
    if kind == "teacache":
        share = max(TEACACHE_ASSUMED_FULL_SHARE, min(1.0, 2.0 / steps))
        return share, (f"TeaCache's skipped evaluations are an assumption ({share:.0%} run in full): its schedule "
                       "depends on the real model's time embedder")
    raise MaskEditError(f"the step cache {kind!r} is unknown; use one of {', '.join(STEP_CACHES)}")


# ----- TeaCache on diffusers' hooks


def _teacache_classes():
    """The TeaCache hook classes (built on first use: diffusers is imported only when a cache is used)."""
    import numpy as np
    import torch
    from diffusers.hooks.hooks import BaseState, CacheContext, ModelHook

    class TeaCacheState(BaseState):
        """One CFG branch's state: the previous modulation, the accumulated change, the step, the residual."""

        def __init__(self):
            self.reset()

        def reset(self):
            self.previous_modulation = None
            self.accumulated = 0.0
            self.step = 0
            self.residual = None
            self.head_input = None
            self.compute = True

    class TeaCacheHeadHook(ModelHook):
        """On the first block: decides whether this evaluation runs; a skipped one returns input + residual."""

        _is_stateful = True

        def __init__(self, state_manager, threshold: float, coefficients, steps: int, is_tail: bool):
            super().__init__()
            self.state_manager, self.threshold, self.steps, self.is_tail = state_manager, threshold, steps, is_tail
            self.rescale = np.poly1d(coefficients)

        @torch.compiler.disable
        def new_forward(self, module, *args, **kwargs):
            if self.state_manager._context is None:
                self.state_manager.set_context(CacheContext(name="inference"))
            hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            modulation = kwargs["temb"] if "temb" in kwargs else args[2]
            state = self.state_manager.get_state()
            if state.step in (0, self.steps - 1) or state.residual is None or state.previous_modulation is None:
                compute, state.accumulated = True, 0.0
            else:
                previous = state.previous_modulation
                change = ((modulation - previous).abs().mean() / previous.abs().mean()).item()
                state.accumulated += float(self.rescale(change))
                compute = state.accumulated >= self.threshold
                if compute:
                    state.accumulated = 0.0
            state.previous_modulation = modulation.detach()
            state.step = (state.step + 1) % self.steps
            state.compute = compute
            if not compute:
                return hidden_states + state.residual.to(hidden_states.device, hidden_states.dtype)
            state.head_input = hidden_states
            output = self.fn_ref.original_forward(*args, **kwargs)
            if self.is_tail:
                state.residual, state.head_input = output - hidden_states, None
            return output

        def reset_state(self, module):
            self.state_manager.reset()
            return module

    class TeaCacheBlockHook(ModelHook):
        """On every later block: passes its input through when skipping; the last one keeps the residual."""

        def __init__(self, state_manager, is_tail: bool):
            super().__init__()
            self.state_manager, self.is_tail = state_manager, is_tail

        @torch.compiler.disable
        def new_forward(self, module, *args, **kwargs):
            if self.state_manager._context is None:
                self.state_manager.set_context(CacheContext(name="inference"))
            state = self.state_manager.get_state()
            hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            if not state.compute:
                return hidden_states
            output = self.fn_ref.original_forward(*args, **kwargs)
            if self.is_tail:
                state.residual, state.head_input = output - state.head_input, None
            return output

    return TeaCacheState, TeaCacheHeadHook, TeaCacheBlockHook


def apply_teacache(transformer, threshold: float, steps: int, coefficients) -> object:
    """Register TeaCache's hooks on the transformer's blocks; returns the StateManager (its states tell whether
    the current evaluation is skipped). Removed by `remove_step_cache`."""
    from diffusers.hooks.hooks import HookRegistry, StateManager

    state_class, head_class, block_class = _teacache_classes()
    manager = StateManager(state_class)
    blocks = list(transformer.blocks)
    registry = HookRegistry.check_if_exists_or_initialize(blocks[0])
    registry.register_hook(head_class(manager, float(threshold), coefficients, int(steps), len(blocks) == 1),
                           _TEACACHE_HEAD)
    for index, block in enumerate(blocks[1:], start=1):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(
            block_class(manager, index == len(blocks) - 1), _TEACACHE_BLOCK)
    return manager


def remove_step_cache(transformer) -> None:
    """Remove any step cache from the transformer (diffusers' `enable_cache` ones and TeaCache's hooks) and the
    streamer's skip test; a transformer without one is left as it is."""
    from ..memory.offload import SKIP_BLOCKS_ATTRIBUTE

    if getattr(transformer, "_cache_config", None) is not None:
        transformer.disable_cache()
    if any(hasattr(block, "_diffusers_hook") for block in transformer.blocks):
        from diffusers.hooks.hooks import HookRegistry

        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        registry.reset_stateful_hooks(recurse=True)
        for name in (_TEACACHE_HEAD, _TEACACHE_BLOCK):
            registry.remove_hook(name, recurse=True)
    if hasattr(transformer, SKIP_BLOCKS_ATTRIBUTE):
        delattr(transformer, SKIP_BLOCKS_ATTRIBUTE)


def _skipping(manager):
    """A test for `offload.SKIP_BLOCKS_ATTRIBUTE`: True while the current evaluation is a skipped one."""

    def skipping() -> bool:
        if manager is None or manager._context is None:
            return False
        state = manager.get_state()
        return not getattr(state, "compute", getattr(state, "should_compute", True))

    return skipping


@contextmanager
def step_cache(pipe, kind: str = DEFAULT_STEP_CACHE, steps: int = 30, threshold: float | None = None,
               key: str | None = None) -> Iterator[StepCacheStats]:
    """Step caching on `pipe.transformer` while the block runs; yields the StepCacheStats it fills.

    kind: one of STEP_CACHES ("off": nothing is added, generation is bit for bit uncached — only the counts are
    taken, by forward hooks that do not touch values). steps: the denoising steps of the call (both caches
    need them). threshold: None = the cache's default. key: "480p" / "720p" (which ratios / coefficients;
    default by the transformer's base: 720P when the pipe's name says so). Two-expert pipes are refused for any
    cache but "off" (`check_step_cache`). Whatever happens inside, the cache and its state are gone afterwards.
    """
    from ..method.experts import is_two_expert
    from ..memory.offload import SKIP_BLOCKS_ATTRIBUTE

    check_step_cache(kind, is_two_expert(pipe))
    transformer = pipe.transformer
    threshold = None if kind == "off" else float(default_threshold(kind) if threshold is None else threshold)
    key = key or model_key(getattr(pipe, "name_or_path", ""))
    stats = StepCacheStats(kind, threshold)
    remove_step_cache(transformer)  # one left by an earlier caller must not act on this generation

    def count_call(module, args, output):
        stats.evaluations += 1

    def count_full(module, args, output):
        stats.full += 1

    handles = []
    for model in (transformer, getattr(pipe, "transformer_2", None)):  # a two-expert pipe: both experts count
        if model is not None:
            handles += [model.condition_embedder.register_forward_hook(count_call),
                        _last_layer(model.blocks[-1]).register_forward_hook(count_full)]
    try:
        manager = None
        if kind == "magcache":
            from diffusers.hooks import MagCacheConfig
            from diffusers.hooks.mag_cache import _MAG_CACHE_LEADER_BLOCK_HOOK
            from diffusers.hooks.hooks import HookRegistry

            transformer.enable_cache(MagCacheConfig(
                threshold=threshold, max_skip_steps=MAGCACHE_MAX_SKIP_STEPS, retention_ratio=MAGCACHE_RETENTION_RATIO,
                num_inference_steps=int(steps), mag_ratios=list(MAG_RATIOS[key])))
            head = HookRegistry.check_if_exists_or_initialize(transformer.blocks[0]).get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK)
            manager = head.state_manager
            stats.notes.append(f"MagCache ratios of Wan2.1-I2V-14B {key.upper()} (calibrated at 40 steps)")
        elif kind == "teacache":
            manager = apply_teacache(transformer, threshold, steps, TEACACHE_COEFFICIENTS[key])
            stats.notes.append(f"TeaCache coefficients of Wan2.1-I2V-14B {key.upper()} (DiffSynth's)")
        if manager is not None:
            setattr(transformer, SKIP_BLOCKS_ATTRIBUTE, _skipping(manager))
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        if kind != "off":
            remove_step_cache(transformer)


def _last_layer(block):
    """The last sub-layer a block runs (its feed-forward in Wan), called only when the block really computes."""
    return getattr(block, "ffn", None) or list(block.children())[-1]
