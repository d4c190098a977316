"""The edit API the command line and the app share, one file per step of an edit: prepare (a clip, its boxes and
the edited frames), train (the LoRA, and the one trip through the LoRA cache: look up → reuse, resume or train →
store), generate (the edited clip and its files), preview (the fast 4-step preview); the LoRA cache's storage
(lora_cache), checks of uploaded LoRA files (lora_checks), and the app's session folders and text inputs (session).

May import: models, perception, the method, memory, media and the base modules. Never the studio or the
interfaces.
"""
