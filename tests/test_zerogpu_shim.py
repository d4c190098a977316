"""The CPU shim and launcher (`zerogpu_local`) on a small probe app (tests/zerogpu_probe_app.py).

Each test here can fail for a reason a Space would show: weights moved to "cuda" at import not restored
exactly in the forked worker, a GPU tensor returned from a call, a generator's yields not streamed, a worker
left running after the app stops (checked by the harness on exit).
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("spaces")
from gradio_client import Client  # noqa: E402

from zerogpu_harness import launched  # noqa: E402
from maskedit.models import zerogpu  # noqa: E402
from zerogpu_local import cpu_shim, recorder  # noqa: E402

PROBE = Path(__file__).with_name("zerogpu_probe_app.py")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    with launched([], tmp_path_factory.mktemp("probe"), app_file=PROBE) as app:
        yield app


def test_module_level_cuda_weights_reach_each_worker_exactly(probe):
    client = Client(probe.url, verbose=False)
    first = json.loads(client.predict(3, api_name="/weights"))
    second = json.loads(client.predict(4, api_name="/weights"))
    assert first["exact"] and second["exact"]  # packed to disk at launch, read back bit for bit
    assert first["device"] == "cuda"  # the worker sees a GPU, as on a Space, so the code takes its CUDA path
    assert first["on_gpu"] == [True, True]  # the restored weights and what is computed from them
    assert first["pid"] != second["pid"]  # the stand-in says "not idle": a new worker process per call
    calls = probe.api.calls()[-2:]
    # the duration callable, on each call's own argument, as spaces schedules it on today's card (the shim reports
    # it): a `large` call (the default) for 1.5x what it asks
    assert [c["duration"] for c in calls] == [zerogpu.scheduled_seconds(16, "large"), 27]
    assert all(c["released"] and not c["failed"] for c in calls)
    assert [c["pids"] for c in calls] == [[first["pid"]], [second["pid"]]]


def test_a_gpu_tensor_returned_from_a_call_fails_as_on_a_space(probe):
    client = Client(probe.url, verbose=False)
    with pytest.raises(Exception, match="PicklingError"):
        client.predict(3, api_name="/gpu_tensor")
    assert "a tensor on the GPU device" in probe.log_text()
    assert probe.api.calls()[-1]["failed"] is True  # released as failed
    results = [r for r in recorder.read(probe.record) if r["event"] == "result" and r["function"] == "gpu_tensor"]
    assert results and results[-1]["on_gpu"] == 1
    assert json.loads(client.predict(2, api_name="/weights"))["exact"]  # the server still serves


def test_generator_yields_stream_from_the_worker(probe):
    client = Client(probe.url, verbose=False)
    job = client.submit(3, api_name="/counted")
    job.result()
    outputs = [o for o in job.outputs() if o]
    assert [o.split(" in ")[0] for o in outputs] == ["step 1", "step 2", "step 3"]
    assert len({o.split(" in ")[1] for o in outputs}) == 1


def test_the_shim_is_pinned_to_one_spaces_version():
    with pytest.raises(RuntimeError, match=f"written for spaces=={cpu_shim.SPACES_VERSION}"):
        cpu_shim.check_spaces_version("0.52.0")
    cpu_shim.check_spaces_version(cpu_shim.SPACES_VERSION)


def test_the_in_task_mode_keeps_cuda_on_the_cpu_and_tracks_what_would_be_on_the_gpu(monkeypatch):
    import torch
    from torch.utils.weak import WeakTensorKeyDictionary

    monkeypatch.setattr(cpu_shim, "ON_GPU", WeakTensorKeyDictionary())

    def task():
        on_gpu = cpu_shim.ON_GPU
        x = torch.arange(4.0)
        y = x.to("cuda")
        model = torch.nn.Linear(4, 2).to("cuda")
        out = model(y)
        back, also_back = out.cpu(), out.to("cpu")
        made = torch.zeros(3, device="cuda")
        variants = [torch.ones(2).cuda(), torch.ones(2).cuda(0, True), torch.ones(2).cuda(device=0),
                    torch.ones(2).to("cuda:0", torch.float16), torch.ones(2).to(device="cuda", non_blocking=True)]
        facts = {"x": x in on_gpu, "y": y in on_gpu and y is not x, "weight": model.weight in on_gpu,
                 "out": out in on_gpu, "back": back in on_gpu or also_back in on_gpu, "made": made in on_gpu,
                 "devices": {str(t.device) for t in (y, out, made)}, "equal": bool(torch.equal(back, out)),
                 "variants": [v in on_gpu for v in variants]}
        model.to("cpu")
        facts["weight_after_cpu"] = model.weight in on_gpu
        return facts

    facts = cpu_shim.on_cpu_task(task)()
    assert facts == {"x": False, "y": True, "weight": True, "out": True, "back": False, "made": True,
                     "devices": {"cpu"}, "equal": True, "variants": [True] * 5, "weight_after_cpu": False}
    assert torch.zeros(1).to("cpu") is not None  # outside the task nothing is changed
    with pytest.raises((RuntimeError, AssertionError)):
        torch.zeros(1, device="cuda")  # CPU torch outside the task: no CUDA
