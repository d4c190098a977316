"""The planner's real-size dry run (maskedit.models.planner) and `python -m maskedit plan`.

The dry runs execute our code on the real Wan2.1-I2V-14B configs with the meta device as the GPU; each takes a
minute or more on a 2-core CPU, so the four presets run once per module (fixture `plans`) and every test that
needs a full plan reads from it.
"""

import json

import pytest
import torch

from maskedit.interfaces.cli import main as cli
from maskedit.models import planner
from maskedit.errors import MaskEditError
from maskedit.models.loading import (DEFAULT_MODEL_ID, REAL_TRANSFORMER_14B, WAN21_720P_MODEL_ID, WAN22_I2V_MODEL_ID,
                             save_tiny_pipeline, save_tiny_two_expert_pipeline)
from maskedit.models.planner import GB, GIB, CARDS, Phase, Plan, _Accounting, _attention_backend
from maskedit.models.presets import PRESETS, get_preset

MB = 1e6


def lora_parameter_count(rank: int) -> int:
    """rank × (in + out) over every block Linear but add_k/add_v (METHOD.md §4), from the real config."""
    dim, ffn, blocks = 5120, REAL_TRANSFORMER_14B["ffn_dim"], REAL_TRANSFORMER_14B["num_layers"]
    attention = 8 * rank * (dim + dim)  # attn1 and attn2: q, k, v, out
    feed_forward = 2 * rank * (dim + ffn)
    return blocks * (attention + feed_forward)


@pytest.fixture(scope="module")
def plans():
    # the stage-2 sample's step (one latent frame: never the peak) runs once, with the full preset
    return {name: planner.estimate(name, stage2=name == "full") for name in PRESETS}


# ----- the dry run of every preset at the real default size


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_dry_runs_at_the_real_size(plans, name):
    plan = plans[name]
    preset = get_preset(name)
    assert (plan.num_frames, plan.width, plan.height) == (preset.num_frames, preset.width, preset.height)
    assert list(plan.phases) == list(planner.PHASES)  # every phase executed
    for phase in plan.phases.values():
        assert phase.peak_gpu_bytes > 0 and phase.flops > 0
    checks = plan.checks
    # trainable parameters are exactly the LoRA's, on 400 layers (10 per block), float32
    assert checks["trainable_parameters"] == lora_parameter_count(preset.rank)
    assert checks["lora_layers"] == 10 * REAL_TRANSFORMER_14B["num_layers"]
    # base weights bf16, float32 only in diffusers' keep-in-fp32 modules (the dry run raises for any parameter of
    # another dtype); elements by dtype of what stays on the module (swapped blocks' weights live in the stores)
    elements = checks["base_parameter_dtypes"]
    assert set(elements) <= {"torch.bfloat16", "torch.float32"}
    assert elements["torch.bfloat16"] > elements.get("torch.float32", 0)
    assert ("torch.float8_e4m3fn" in checks["streamed_store_dtypes"]) == preset.fp8
    assert checks["gradient_checkpointing"] == preset.gradient_checkpointing
    if preset.blocks_to_swap:
        assert checks["blocks_swapped"] == preset.blocks_to_swap
        assert checks["streamed_blocks_held_at_most"] == 2  # the block in use + the next one prefetched
        assert checks["host_store_bytes"] > preset.blocks_to_swap * 0.3e9  # ≥ 0.3 GB per swapped block
    else:
        assert checks.get("blocks_swapped", 0) == 0  # no streamer, or one for fp8 stores alone
    # what a ZeroGPU call holds before any work (the weights as placed), and a stacked speed LoRA's bf16 factors
    assert 0 < checks["resident_gpu_bytes"] <= plan.phases["encode prompts/images"].peak_gpu_bytes
    assert checks["speed_lora_gpu_bytes"] == lora_parameter_count(64) * 2


def test_lighter_presets_need_less_memory_to_train(plans):
    train = {name: plan.phases["training step"].peak_gpu_bytes for name, plan in plans.items()}
    assert train["low-cost"] < train["24gb"] < train["full"]
    # the full preset holds the whole bf16 transformer: ≥ 16.39 B parameters × 2 bytes
    assert train["full"] > 16.39e9 * 2


def test_24gb_fits_a_24_gb_card_because_its_encoders_wait_in_host_memory(plans):
    """Every phase of the 24gb preset's edit fits 24 GB; with umT5, CLIP and the VAE left on the GPU the
    condition's VAE encode and the denoising steps would not (they sit beside the resident blocks)."""
    assert plans["24gb"].preset.offload_encoders and plans["24gb"].fits(24)
    on_gpu = planner.estimate("24gb", offload_encoders=False, train=False)
    assert not on_gpu.fits(24)
    assert on_gpu.phases["denoising step"].peak_gpu_bytes - plans["24gb"].phases["denoising step"].peak_gpu_bytes \
        > 10.5 * GIB  # at least umT5's 5.68 B bf16 parameters


def test_flops_per_training_step_match_the_analytic_count(plans):
    """An independent count: video-token Linears at 2 FLOPs per parameter and token, run forward, recomputed
    (checkpointing) and backward for the input only (the base is frozen: no weight gradient); flash attention
    forward, recomputed, and a 2.5x backward. The counted FLOPs (LoRA and the rest included) land within 5%."""
    plan = plans["full"]
    d, ffn, blocks = 5120, REAL_TRANSFORMER_14B["ffn_dim"], REAL_TRANSFORMER_14B["num_layers"]
    tokens = 13 * (480 // 16) * (832 // 16)  # 49 frames → 13 latent frames of 30x52 patches
    video_linear = blocks * (4 * d * d + 2 * d * d + 2 * d * ffn)  # attn1 q/k/v/o, attn2 q/o, ffn
    cross_kv = blocks * 2 * (2 * d * d) * (512 + 257)  # attn2 k/v over text tokens, add_k/add_v over image tokens
    attention = blocks * 4 * tokens * tokens * d  # QKᵀ and PV
    expected = (2 * video_linear * tokens + cross_kv) * 3 + attention * 4.5
    assert plan.train_step_flops == pytest.approx(expected, rel=0.05)


# ----- the paper's measurements (RTX 4090, 832x480): a check, not a calibration


@pytest.fixture(scope="module")
def paper_plans(plans):
    """Our implementation of the paper's settings: fp8 base, checkpointing with each block's input offloaded to
    the CPU, 9-frame windows (= the low-cost preset with 38 swapped) with 0 / 16 / 32 / 38 blocks swapped."""
    runs = {38: plans["low-cost"]}
    for swap in (0, 16, 32):
        runs[swap] = planner.estimate("low-cost", blocks_to_swap=swap, generate=False, stage2=False)
    return runs


PAPER_MB = {0: 25_097, 16: 16_305, 32: 9_987, 38: 7_617}


@pytest.mark.parametrize("swap", sorted(PAPER_MB))
def test_training_peak_agrees_with_the_paper_table_4(paper_plans, swap):
    estimate = paper_plans[swap].phases["training step"].peak_gpu_bytes / MB
    assert estimate == pytest.approx(PAPER_MB[swap], rel=0.20), (swap, estimate)


def test_training_peak_agrees_with_the_reference_code_at_49_frames(plans):
    """The reference code's later default: bf16, 32 of 40 swapped, checkpointing with each block's input
    offloaded to the CPU, 49 frames: 21.5 GB — our 24gb preset. Without the activation offload the 40
    checkpointed block inputs (20,280 tokens x 5120 x bf16 each) stay on the GPU, which the planner counts."""
    preset = plans["24gb"].preset
    assert (preset.blocks_to_swap, preset.fp8, preset.num_frames, preset.window) == (32, False, 49, 0)
    assert preset.activation_offload
    assert plans["24gb"].phases["training step"].peak_gpu_bytes / GB == pytest.approx(21.5, rel=0.20)
    kept_on_gpu = planner.estimate("24gb", activation_offload=False, generate=False, stage2=False)
    inputs = 40 * 20_280 * 5120 * 2
    kept = kept_on_gpu.phases["training step"].peak_gpu_bytes - plans["24gb"].phases["training step"].peak_gpu_bytes
    assert kept == pytest.approx(inputs, rel=0.10)


def test_each_swapped_block_saves_what_one_fp8_block_weighs(paper_plans):
    """Slope of the paper's table: (16,305 − 9,987) / 16 ≈ 395 MB per block; ours comes from the fp8 bytes of
    a block (~0.40 B parameters), not from a fitted constant."""
    per_block = (paper_plans[16].phases["training step"].peak_gpu_bytes
                 - paper_plans[32].phases["training step"].peak_gpu_bytes) / 16 / MB
    assert per_block == pytest.approx((16_305 - 9_987) / 16, rel=0.10)


# ----- more bases: Wan2.2-I2V-A14B (two experts), 720P, local folders


def test_wan22_a14b_trains_one_expert_at_a_time_and_generates_with_both(plans):
    """Both experts' LoRAs train (twice Wan2.1's trainable parameters); while one expert trains the other is
    offloaded, so the training step needs no more than Wan2.1's; generation holds both experts."""
    plan = planner.estimate("full", model=WAN22_I2V_MODEL_ID, stage2=False)
    wan21 = plans["full"]
    assert plan.checks["trainable_parameters"] == 2 * lora_parameter_count(get_preset("full").rank)
    assert plan.checks["lora_layers"] == 2 * 10 * REAL_TRANSFORMER_14B["num_layers"]
    expert_bytes = 14.28e9 * 2  # one A14B expert in bf16 (no image cross-attention)
    train = plan.phases["training step"].peak_gpu_bytes
    assert train < wan21.phases["training step"].peak_gpu_bytes + 0.5 * GIB
    # two experts (2 × 28.6 GB) against Wan2.1's transformer (32.8 GB) and CLIP (2.5 GB): ≈ +21.9 GB; one
    # expert resident would be ≈ 6.7 GB below Wan2.1
    assert plan.phases["denoising step"].peak_gpu_bytes > wan21.phases["denoising step"].peak_gpu_bytes + 0.7 * expert_bytes
    assert plan.peak_host_gib * GIB > expert_bytes  # the inactive expert waits in host memory
    assert plan.train_step_flops == pytest.approx(wan21.train_step_flops, rel=0.02)  # no CLIP tokens, same blocks
    assert any("two experts" in note for note in plan.notes)


def test_wan22_a14b_24gb_fits_a_24_gb_card_with_half_the_resident_blocks_per_expert():
    plan = planner.estimate("24gb", model=WAN22_I2V_MODEL_ID, stage2=False)
    assert plan.preset.blocks_to_swap == 36 and plan.checks["blocks_swapped"] == 36  # bases.adapt_preset
    assert plan.checks["streamed_blocks_held_at_most"] == 2 and plan.fits(24)


def test_presets_adapt_their_size_to_the_base_as_the_app_does():
    def size(preset, model):
        plan = planner.estimate(preset, model=model, train=False, generate=False)
        return plan.width, plan.height

    assert size("full", WAN21_720P_MODEL_ID) == (1280, 720)
    assert size("zerogpu", WAN21_720P_MODEL_ID) == (640, 368)  # chosen for its budget: kept (bases.adapt_preset)
    assert size("full", DEFAULT_MODEL_ID) == (832, 480)


def test_a_local_diffusers_folder_is_planned_from_its_config_files(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    save_tiny_pipeline(one)
    save_tiny_two_expert_pipeline(two)
    for weights in list(one.rglob("*.safetensors")) + list(two.rglob("*.safetensors")):
        weights.unlink()  # the planner reads configs only
    settings = dict(num_frames=9, size=(832, 480), blocks_to_swap=1)
    single = planner.estimate("24gb", model=str(one), **settings)
    double = planner.estimate("24gb", model=str(two), **settings)
    assert list(single.phases) == list(planner.PHASES) and single.model == str(one)
    assert double.checks["trainable_parameters"] == 2 * single.checks["trainable_parameters"]
    assert single.checks["blocks_swapped"] == 1
    (one / "transformer" / "config.json").unlink()
    with pytest.raises(MaskEditError, match="no transformer/config.json"):
        planner.estimate("24gb", model=str(one), **settings)


# ----- the accounting itself (small, exact)


def test_accounting_counts_allocations_frees_and_host_copies_exactly():
    accounting = _Accounting()
    with accounting, accounting.in_phase("p"):
        a = torch.empty(1000, device="meta", dtype=torch.bfloat16)  # 2,000 bytes on the GPU
        host = a.to("cpu")  # a copy into host memory, still a meta tensor
        assert host.device.type == "meta" and accounting.pool_of(host) == "host"
        back = host.to("meta", copy=True)
        assert accounting.pool_of(back) == "gpu"
        assert accounting.live == {"gpu": 4000, "host": 2000}
        del a, back
        assert accounting.live == {"gpu": 0, "host": 2000}
        with pytest.raises(planner.DeviceMismatch, match="mixes tensors on the GPU and in host memory"):
            torch.empty(1000, device="meta", dtype=torch.bfloat16) + host
        with pytest.raises(planner.DeviceMismatch, match="mixes tensors"):  # tensors in one list argument too
            torch.cat([torch.empty(1000, device="meta", dtype=torch.bfloat16), host])
    assert accounting.peaks["p"]["gpu"] == 4000  # a and back together; the failed add came after a was freed


def test_memoised_meta_kernels_change_no_figure(monkeypatch):
    """The memo of meta kernels (the dry run's speed) gives the figures of running every kernel, byte for byte."""
    settings = dict(num_frames=17, size=(832, 480), generate=False, stage2=False)
    monkeypatch.setattr(planner, "_META_RESULTS", {})
    memoised = planner.estimate("24gb", **settings)
    assert planner._META_RESULTS  # the memo was used
    monkeypatch.setattr(planner, "_MEMO", False)
    every_kernel = planner.estimate("24gb", **settings)
    for name, phase in every_kernel.phases.items():
        assert (memoised.phases[name].peak_gpu_bytes, memoised.phases[name].peak_host_bytes,
                memoised.phases[name].flops) == (phase.peak_gpu_bytes, phase.peak_host_bytes, phase.flops), name


def test_flash_attention_never_materialises_the_attention_matrix():
    b, h, length, d = 1, 40, 4680, 128
    peaks = {}
    for backend in ("flash", "math"):
        accounting = _Accounting()
        with _attention_backend(backend), accounting, accounting.in_phase("attention"):
            q = torch.empty(b, h, length, d, device="meta", dtype=torch.bfloat16, requires_grad=True)
            torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
        peaks[backend] = accounting.peaks["attention"]["gpu"]
        if backend == "flash":
            flops = accounting.flops["attention"]
    qkv = b * h * length * d * 2
    # forward: q, out (bf16) + log-sum-exp (float32); backward: grad, dq, dk, dv (+ small reductions)
    assert peaks["flash"] < 8 * qkv + b * h * length * 4 * 2
    assert peaks["math"] > b * h * length * length * 4  # the float32 attention matrix
    # flash forward 4·b·h·L²·d; backward 2.5× that (it recomputes QKᵀ; flop_counter's formulas)
    assert flops == 4 * b * h * length * length * d * 7 // 2


# ----- the plan's API


def fake_plan(peak_gb: float, name: str = "24gb") -> Plan:
    phases = {p: Phase(p, int(peak_gb * GB), int(GIB), int(1e15)) for p in planner.PHASES}
    preset = get_preset(name)
    return Plan(DEFAULT_MODEL_ID, preset, preset.num_frames, preset.width, preset.height, "flash", phases)


def test_summary_fits_and_time_floor():
    plan = fake_plan(19.0)
    assert plan.summary(24) == "needs ≈ 19.0 GB of GPU memory; fits your 24 GB card"
    assert plan.summary(16) == "needs ≈ 19.0 GB of GPU memory; does not fit your 16 GB card"
    assert plan.fits(19.0) and not plan.fits(18.9)
    h100 = CARDS["h100"]
    assert plan.phases["training step"].time_floor_s(h100) == pytest.approx(1e15 / 989.4e12)
    assert plan.preset.step_cache == "magcache" and plan.denoising_steps_run() == 13  # 13 of 30 steps run in full
    steps = plan.preset.train_steps + 13 + 3  # + encode, VAE encode, decode
    assert plan.time_floor_s(h100) == pytest.approx(steps * 1e15 / 989.4e12)
    data = plan.to_dict(h100, 24)
    assert {"peak_gpu_gib", "peak_host_gib", "train_step_flops", "phases"} <= set(data)
    assert data["phases"]["training step"] == pytest.approx(19e9 / GIB, abs=1e-3) and data["fits"]


def test_cheapest_preset_and_the_cuda_warning(monkeypatch):
    plans = {"full": fake_plan(70, "full"), "24gb": fake_plan(21, "24gb"), "zerogpu": fake_plan(40, "zerogpu"),
             "low-cost": fake_plan(8, "low-cost")}
    assert planner.cheapest_fitting_preset(80, plans=plans).preset.name == "full"
    assert planner.cheapest_fitting_preset(24, plans=plans).preset.name == "24gb"
    assert planner.cheapest_fitting_preset(10, plans=plans).preset.name == "low-cost"
    assert planner.cheapest_fitting_preset(5, plans=plans) is None
    assert planner.check_cuda_fits(plans["full"]) is None or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=0: (int(23.5e9), int(24e9)))
    warning = planner.check_cuda_fits(plans["full"], other=plans)
    assert "23.5 GB are free" in warning and "use the 24gb preset" in warning
    assert planner.check_cuda_fits(plans["low-cost"], other=plans) is None


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(model="tiny"), "the tiny model needs no plan"),
    (dict(model="someone/else"), "no built-in config"),
    (dict(num_frames=40001, size=(64, 64)), r"num_frames\) is 40001; .* at most 35997"),  # limits.py, before the rope check
    (dict(num_frames=50), r"num_frames\) is 50; it must be a whole number \(4k\+1\)"),
    (dict(attention="sage"), "attention must be one of"),
])
def test_bad_requests_are_refused_before_any_work(kwargs, phrase):
    with pytest.raises(MaskEditError, match=phrase):
        planner.estimate("full", **kwargs)


# ----- the command line


def test_cli_plan_prints_phases_and_json(plans, capsys, monkeypatch):
    calls = []

    def estimate(preset, num_frames=None, size=None, model=DEFAULT_MODEL_ID, **kwargs):
        calls.append((preset, num_frames, size, model, kwargs))
        return plans[preset]

    monkeypatch.setattr(planner, "estimate", estimate)
    assert cli.main(["plan", "--preset", "24gb", "--gpu", "4090", "--blocks-to-swap", "32", "--no-fp8"]) == 0
    out = capsys.readouterr().out
    for phase in planner.PHASES:
        assert phase in out
    assert "NVIDIA GeForce RTX 4090" in out and "GB of GPU memory" in out
    assert calls[0][4]["blocks_to_swap"] == 32 and calls[0][4]["fp8"] is False

    assert cli.main(["plan", "--preset", "full", "--gpu-memory", "24", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["peak_gpu_gib"] == pytest.approx(plans["full"].peak_gpu_gib, abs=1e-3)
    assert data["train_step_flops"] == plans["full"].train_step_flops
    assert set(data["phases"]) == set(planner.PHASES) and data["fits"] is False
    assert data["preset_that_fits"] in PRESETS and data["preset_that_fits"] != "full"

    # one ZeroGPU call as the card: its memory less the margin, the size each kind of call takes, its step time
    from maskedit.models import estimates, zerogpu

    assert cli.main(["plan", "--preset", "zerogpu", "--gpu", "zerogpu-large"]) == 0
    out = capsys.readouterr().out
    usable = zerogpu.usable_bytes("large") / 1e9
    assert f"fits your {usable:g} GB card" in out and zerogpu.SOURCE in out
    entry = estimates.table_entry(plans["zerogpu"])
    training = estimates.call_peak_bytes(entry, "training") / 1e9
    step = entry["phase_details"]["training step"]["flops"] / (zerogpu.CARD.bf16_tflops / 2 * 1e12 * 0.35)
    assert f"training chunk: ≈ {training:.1f} GB → large (half an" in out and f"≈ {step:.1f} s at 35%" in out


@pytest.mark.parametrize("argv, phrase", [
    (["--size", "832by480"], "is not WIDTHxHEIGHT"),
    (["--gpu-memory", "0"], "must be positive"),
    (["--model", "someone/else"], "no built-in config"),
])
def test_cli_plan_bad_inputs(capsys, argv, phrase):
    code = cli.main(["plan", *argv])
    err = capsys.readouterr().err
    assert code == 2 and phrase in err and "Traceback" not in err
