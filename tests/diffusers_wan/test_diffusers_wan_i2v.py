"""diffusers' own Wan I2V pipeline tests, run offline for `WanImageToVideoPipeline` and `MaskEditPipeline`.

The test code is diffusers' (`tests/pipelines/wan/test_wan_image_to_video.py` and the mixins under
`tests/pipelines/testing_utils/` of a diffusers source tree); it is not copied into this repository. Point
`MASKEDIT_DIFFUSERS_TESTS` at a folder holding a diffusers source tree's `tests/` folder, e.g.

    git clone --depth 1 -b v0.40.0-release https://github.com/huggingface/diffusers /tmp/diffusers-src
    MASKEDIT_DIFFUSERS_TESTS=/tmp/diffusers-src python -m pytest -q tests/diffusers_wan

Without it every test here is skipped with that reason. The suite's dummy text encoder and tokenizer come from
the Hub (`hf-internal-testing/tiny-random-t5`); offline they are replaced by a T5 config of the same shape and
the tokenizer built in code (`maskedit.models.loading.tiny_tokenizer`), for both pipelines alike, so the two classes
below see identical components. Every test class of that module is collected twice, as it is (diffusers'
pipeline, the baseline) and as `TestMaskEdit…` with `pipeline_class = MaskEditPipeline`: MaskEditPipeline must
pass wherever the stock pipeline passes. Measured with v0.40.0-release's tests (the newest in reach; the
installed diffusers is 0.42.1): for each pipeline 34 passed and 28 skipped (accelerator-only), and
test_inference of both fails offline (marked xfail, strict, with the reason).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from maskedit.method.pipeline import MaskEditPipeline

SOURCE = os.environ.get("MASKEDIT_DIFFUSERS_TESTS")
PACKAGE = "diffusers_tests"
OFFLINE_INFERENCE = ("test_inference compares with numbers made with the Hub's tiny-random-t5 tokenizer, which the "
                     "offline run replaces: it fails for diffusers' pipeline and ours alike")  # diffusers' `tests` package under another name: ours is also called `tests`


def _load_suite():
    """diffusers' Wan I2V test module, imported from `SOURCE` as `diffusers_tests.pipelines.wan.…`."""
    root = Path(SOURCE) / "tests"
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, root / "__init__.py", submodule_search_locations=[str(root)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{PACKAGE}.pipelines.wan.test_wan_image_to_video")


def _offline(module) -> None:
    """Replace the suite's two Hub look-ups (config and tokenizer of tiny-random-t5) with offline equivalents."""
    from transformers import T5Config

    from maskedit.models.loading import tiny_tokenizer

    class OfflineAutoConfig:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            # the shape of hf-internal-testing/tiny-random-t5 (d_model 32 = the dummy transformer's text_dim)
            return T5Config(vocab_size=len(tiny_tokenizer()), d_model=32, d_ff=37, d_kv=8, num_layers=5,
                            num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.1)

    class OfflineAutoTokenizer:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            return tiny_tokenizer()

    module.AutoConfig = OfflineAutoConfig
    module.AutoTokenizer = OfflineAutoTokenizer


def _maskedit_variant(stock_class):
    """`stock_class` with `pipeline_class = MaskEditPipeline`. diffusers' `ReturnNameVisitor` (used by
    test_encode_prompt_works_in_isolation) finds a pipeline's source by its name inside `diffusers.pipelines`,
    which an out-of-tree subclass is not; the fixture makes the name resolvable there for the test's duration."""

    @pytest.fixture(autouse=True)
    def resolvable_in_diffusers(self, monkeypatch):
        import diffusers.pipelines

        monkeypatch.setattr(diffusers.pipelines, MaskEditPipeline.__name__, MaskEditPipeline, raising=False)

    return type(stock_class.__name__.replace("Test", "TestMaskEdit", 1), (stock_class,), {
        "pipeline_class": MaskEditPipeline, "resolvable_in_diffusers": resolvable_in_diffusers,
        "__doc__": f"diffusers' {stock_class.__name__} for MaskEditPipeline.",
    })


if SOURCE:
    _suite = _load_suite()
    _offline(_suite)
    for _name, _class in vars(_suite).copy().items():
        if _name.startswith("Test") and isinstance(_class, type):
            if "test_inference" in vars(_class):
                # its expected numbers come from the Hub's tiny-random-t5 tokenizer, replaced offline (both fail)
                pytest.mark.xfail(strict=True, raises=AssertionError, reason=OFFLINE_INFERENCE)(_class.test_inference)
            globals()[_name] = _class  # diffusers' pipeline: the baseline
            _variant = _maskedit_variant(_class)
            globals()[_variant.__name__] = _variant
    del _name, _class, _variant
else:

    def test_diffusers_suite_needs_a_source_tree():
        pytest.skip("set MASKEDIT_DIFFUSERS_TESTS to a diffusers source tree to run diffusers' Wan I2V tests")
