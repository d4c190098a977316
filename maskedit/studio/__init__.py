"""The service: the gradio-free layer between the workflow and the page. A session service with one method per
user action (`Studio`), its typed state (`SessionState`), the Segment step's objects and their union
(`objects`), chunked training through the LoRA cache (`runs`), the
training progress events and their accumulator (`progress`), background training (`background_job`,
`background_training`), generation in the app (`generation`) and what stays loaded (`runtime`).

May import: the workflow and everything below it. Never gradio or the interfaces.
"""
