"""The Gradio page: one module per tab (its layout and wiring; each handler one call to `Studio`), the
train-while-you-edit wiring that spans tabs (background_training), the API-only endpoints (api), the widgets and the
error messages every tab shares (components, messages), and the page that puts them together (page).

The only place in `maskedit` that imports gradio. `app.py` builds the runtime and the `@spaces.GPU` calls and
hands them to `page.build_page`.

May import: the studio and everything below it.
"""

