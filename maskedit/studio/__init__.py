"""The gradio-free layer between the method and the app: a session service with one method per user
action (`Studio`), its typed state (`SessionState`), chunked training through the LoRA cache (`runs`), the
training progress events and their accumulator (`progress`), generation in the app (`generation`) and what
stays loaded (`runtime`). `app.py` only lays out widgets, wires them to `Studio` methods and wraps the GPU
calls in `@spaces.GPU`."""
