"""What we see in the user's clip with models of our own choosing: segmentation (the front: which backend,
clicks → tight masks → loose boxes), its backends (segmentation_sam2: SAM2.1 through transformers;
segmentation_fallback: offline, OpenCV), their shared click checks (segmentation_prompts), and captioning
(Florence-2 captions for the training prompts).

May import: the method, memory, media and the base modules.
"""
