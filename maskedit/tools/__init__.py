"""Tools for tests, benchmarks and scripts, not used by the library: the toy world (procedural clips with
ground-truth edits) and procedural segmentation scenes.

May import: the method, media and the base modules. Nothing in the library imports tools.
"""
