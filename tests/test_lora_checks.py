"""`maskedit.workflow.lora_checks`: a LoRA file's layers against a transformer, from names and shapes alone."""

import pytest
import torch
from safetensors.torch import save_file

from maskedit.errors import MaskEditError
from maskedit.method.experts import HIGH_NOISE, LOW_NOISE, expert_module, save_expert_loras
from maskedit.method.lora import add_lora, save_lora
from maskedit.workflow.lora_checks import check_lora_fits, lora_layers
from maskedit.models.loading import build_tiny_pipeline, build_tiny_two_expert_pipeline


def test_maskedit_files_fit_in_both_key_formats_and_name_the_same_layers(tmp_path):
    pipe = build_tiny_pipeline()
    add_lora(pipe.transformer, rank=4, alpha=4.0)
    save_lora(pipe, tmp_path, {})
    diffusers, comfy = lora_layers(tmp_path / "lora.safetensors"), lora_layers(tmp_path / "lora_comfyui.safetensors")
    assert diffusers == comfy and len(diffusers) == 2 * 10  # 2 blocks x 10 linear layers, A and B each
    assert diffusers["blocks.1.ffn.net.0.proj"] == {"A": (4, 32), "B": (64, 4)}
    fresh = build_tiny_pipeline().transformer
    check_lora_fits(tmp_path / "lora.safetensors", fresh)
    check_lora_fits(tmp_path / "lora_comfyui.safetensors", fresh)
    check_lora_fits(tmp_path / "lora.safetensors", pipe.transformer)  # a transformer that already holds an adapter


def test_each_expert_file_fits_each_expert(tmp_path):
    pipe = build_tiny_two_expert_pipeline()
    for expert in (HIGH_NOISE, LOW_NOISE):
        add_lora(expert_module(pipe, expert), rank=4, alpha=4.0)
    files = save_expert_loras(pipe, tmp_path, {})
    other = build_tiny_two_expert_pipeline()
    for expert, path in files.items():
        check_lora_fits(path, expert_module(other, expert), "expert")


@pytest.mark.parametrize("tensors, words", [
    ({"blocks.0.attn1.to_q.lora_A.weight": (4, 48)}, "blocks.0.attn1.to_q takes 32 inputs, the LoRA's A is [4, 48]"),
    ({"blocks.0.ffn.net.2.lora_B.weight": (32, 4), "blocks.0.ffn.net.2.lora_A.weight": (4, 32)},
     "blocks.0.ffn.net.2 takes 64 inputs"),
    ({"blocks.0.attn2.to_out.0.lora_B.weight": (48, 4)}, "gives 32 outputs, the LoRA's B is [48, 4]"),
    ({"blocks.0.attn1.to_v.lora_A.weight": (4, 32), "blocks.0.attn1.to_v.lora_B.weight": (32, 8)}, "different ranks"),
    ({"diffusion_model.blocks.5.self_attn.q.lora_down.weight": (4, 32)}, "blocks.5.attn1.to_q is not a layer"),
])
def test_a_layer_that_does_not_fit_is_named(tmp_path, tensors, words):
    path = tmp_path / "foreign.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in tensors.items()}, str(path))
    with pytest.raises(MaskEditError) as error:
        check_lora_fits(path, build_tiny_pipeline().transformer)
    assert words in str(error.value) and "foreign.safetensors does not fit this model's transformer" in str(error.value)


def test_keys_of_other_formats_are_left_to_the_loader(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"lora_unet_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 999),
               "blocks.0.norm3.diff": torch.zeros(32)}, str(path))
    assert lora_layers(path) == {}
    check_lora_fits(path, build_tiny_pipeline().transformer)
