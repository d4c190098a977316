"""The edit API the command line and the app share: prepare a clip, train its LoRA, generate (editing), the
LoRA cache (lora_cache), checks of uploaded LoRA files (lora_checks), the app's session folders and text
inputs (session), the fast preview (preview).

May import: models, perception, the method, memory, media and the base modules. Never the studio or the
interfaces.
"""
