"""A small Gradio app with one `@spaces.GPU` function per ZeroGPU rule, run by tests/test_zerogpu_shim.py
under `python -m zerogpu_local` (it is not a test module itself).

    python -m zerogpu_local --app tests/zerogpu_probe_app.py -- --port 7861
"""

import spaces  # first, as on a Space

import argparse
import json
import os

import gradio as gr
import torch

from zerogpu_local import cpu_shim  # only to read its marks: which tensors would be on the GPU on a Space

WEIGHTS = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7 + 0.1
MODEL = torch.nn.Linear(4, 3, bias=False)
with torch.no_grad():
    MODEL.weight.copy_(WEIGHTS)
MODEL.to("cuda")  # ZeroGPU's documented pattern: moved at import, packed at launch, restored in each worker


def _duration(steps, *rest, **kwargs) -> int:
    return 10 + 2 * int(steps)


@spaces.GPU(duration=_duration)
def weights(steps: float) -> str:
    """What the worker sees of the module-level model: exact weights, the device code takes, its PID."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.ones(1, 4, device=device)
    y = MODEL(x)
    return json.dumps({"exact": bool(torch.equal(MODEL.weight.detach().cpu(), WEIGHTS)), "device": device,
                       "output": y.detach().cpu().tolist(), "pid": os.getpid(), "steps": int(steps),
                       "on_gpu": [MODEL.weight in cpu_shim.ON_GPU, y in cpu_shim.ON_GPU]})


@spaces.GPU(duration=5)
def gpu_tensor(steps: float):
    """Wrong: returns a tensor that lives on the GPU."""
    return torch.ones(2).cuda() * steps


@spaces.GPU(duration=5)
def counted(steps: float):
    """A generator: each yield crosses the process boundary by pickling."""
    for step in range(int(steps)):
        yield f"step {step + 1} in {os.getpid()}"


def returns_gpu_tensor(steps: float) -> str:
    return str(gpu_tensor(steps))


with gr.Blocks() as demo:
    number = gr.Number(3)
    text = gr.Textbox()
    gr.Button("weights").click(weights, number, text, api_name="weights")
    gr.Button("gpu tensor").click(returns_gpu_tensor, number, text, api_name="gpu_tensor")
    gr.Button("counted").click(counted, number, text, api_name="counted")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=7861)
    demo.queue().launch(server_name="127.0.0.1", server_port=parser.parse_args().port)
