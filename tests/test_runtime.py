from __future__ import annotations

import logging

import pytest
import torch

from linkstyle.config import ConfigError
from linkstyle.runtime import autocast, resolve_device, run_batched


def test_out_of_memory_halves_the_batch_and_covers_every_item_once(caplog):
    seen: list[int] = []

    def step(sl: slice) -> None:
        if sl.stop - sl.start > 25:
            raise torch.OutOfMemoryError("simulated")
        seen.extend(range(sl.start, sl.stop))

    done: list[int] = []
    with caplog.at_level(logging.INFO, logger="linkstyle"):
        size = run_batched(100, 100, step, done.append, setting="tune.batch_size")
    assert size == 25 and seen == list(range(100)) and sum(done) == 100
    # the size that fits is logged once, with the key that avoids the retries next time
    assert "batch size 25 fits in GPU memory (tune.batch_size asks for 100); set tune.batch_size: 25" in caplog.text
    assert caplog.text.count("halved to") == 2


def test_a_batch_that_fits_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="linkstyle"):
        assert run_batched(10, 4, lambda sl: None) == 4
    assert caplog.text == ""


def test_out_of_memory_at_batch_one_is_raised():
    def step(sl: slice) -> None:
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError):
        run_batched(3, 2, step)


def test_autocast_changes_the_matmul_dtype_only_when_asked():
    a = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16


def test_asking_for_cuda_without_a_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
