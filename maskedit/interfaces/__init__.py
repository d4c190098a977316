"""How people reach MaskEdit: the command line (`cli/`, `python -m maskedit …`) and the Gradio page (`ui/`,
one module per tab; the only place that imports gradio).

May import everything below it; nothing in `maskedit` imports the interfaces (`__main__` excepted).
"""
