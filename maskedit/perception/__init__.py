"""What we see in the user's clip with models of our own choosing: segmentation (the front: the backends in
one place, clicks or text → tight masks → loose boxes, several objects' union), its backends (segmentation_sam3:
SAM 3 through transformers, text and clicks; segmentation_sam2: SAM2.1 through transformers;
segmentation_fallback: offline, OpenCV), their shared click checks (segmentation_prompts), and captioning
(Florence-2 captions for the training prompts).

May import: the method, memory, media and the base modules.
"""
