"""The method of METHOD.md, one file per idea: masks (mask ⇄ loose box, polarity: §3), conditioning (the
generalised I2V condition, samples and mask packing: §2, §4–§6, §7's windows), pipeline (`MaskEditPipeline`:
§6, the samplers, feature blending of §8), training (the LoRA trainer and its stage plan: §4, §5, §7), lora
(which layers, the LoRA files), experts (Wan2.2's two experts, one LoRA each).

May import: memory, media and the base modules (errors, defaults, limits, runtime). Never the workflow, the
models, perception, the studio or the interfaces.
"""
