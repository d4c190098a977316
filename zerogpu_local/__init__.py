"""ZeroGPU's own code path on a CPU machine: a device API stand-in, the CPU shim, a launcher, a call record.

    python -m zerogpu_local -- --model tiny       # app.py, unchanged, with every @spaces.GPU call forked

Why a top-level package and not `maskedit/`: it imports `spaces` (and so gradio) and patches torch, which
the library must never do; it is deployment tooling beside app.py, used by tests/test_zerogpu*.py and by
anyone preparing a Space. Modules: device_api (stand-in server, stdlib only), cpu_shim (every stand-in for
CPU torch, pinned to one spaces version), recorder (test instrument), __main__ (the launcher).
"""
