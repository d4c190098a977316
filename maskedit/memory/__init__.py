"""Memory machinery the method runs on: block swapping, fp8 base weights, activation and encoder offload
(offload, METHOD.md §7), and several processes (distributed).

May import: media and the base modules. Used by the method (the pipeline and the trainer), never the reverse.
"""
