"""The README's app flows on the product as shipped, started the other ways the README gives: with the work and
cache folders moved into the user's HOME (`--work-dir`, `--lora-cache FOLDER`), and under ZeroGPU's own code path
(`python -m zerogpu_local -- --model tiny`). Each in a process of its own on a user's machine without network
(`shipped.UserMachine`); the README's blocks verbatim from two client scripts at once.
"""

import time

import pytest

from shipped import UserMachine, client_steps, finish_client, start_client, started
from test_readme import STEP_VALUES, check_nothing_else_is_served, check_readme_results, run_readme_blocks


@pytest.fixture
def machine(tmp_path):
    return UserMachine.create(tmp_path)


def test_the_readme_blocks_with_the_work_and_cache_folders_in_home(machine):
    """Any folder outside the working directory and the temp folder used to break the first /load_video."""
    work, cache = machine.home / "maskedit-work", machine.home / "my-loras"
    with started(machine, ["app.py", "--work-dir", str(work), "--lora-cache", str(cache)]) as app:
        step_values, edit_values, seconds = run_readme_blocks(machine, app, "folders")
        check_readme_results(step_values, edit_values)
        assert len(list(cache.glob("*/lora.safetensors"))) == 2 and work.is_dir()  # (sessions end with their clients)
        assert not (machine.home / ".cache" / "maskedit").exists()  # the default cache is not used
        assert not (machine.tmp / "maskedit-sessions").exists()  # nor the default work folder
        log = app.log_text()
        assert "Traceback" not in log and "InvalidPathError" not in log, log[-3000:]
        check_nothing_else_is_served(app, [cache, work], machine.home)
    print(f"\n--work-dir/--lora-cache app: started in {app.started_s:.1f} s; README blocks {seconds:.1f} s")


def test_the_readme_step_by_step_block_under_zerogpu_local(machine):
    """`python -m zerogpu_local -- --model tiny` as the README gives it: every GPU call in a forked worker."""
    with started(machine, ["-m", "zerogpu_local", "--", "--model", "tiny"], name="zerogpu") as app:
        since = time.perf_counter()
        values, printed = finish_client(start_client(machine, client_steps(), app.port, STEP_VALUES, "zerogpu_steps"))
        assert values["edited"] in printed and values["info"]["method"] == "mask-lora"
        assert values["loss_points"]["step"] == list(range(1, 11))
        log = app.log_text()
        assert "zerogpu_local: device API stand-in" in log and "Traceback" not in log, log[-3000:]
    print(f"\nzerogpu_local: started in {app.started_s:.1f} s; README block {time.perf_counter() - since:.1f} s")
