"""Pixels and files: reading, conforming and writing clips and images (video), files that are never left
half-written (files), the one hashing scheme of run keys (hashing), image and video metrics (metrics).

May import: the base modules only.
"""
