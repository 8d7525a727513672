from __future__ import annotations

import logging
import subprocess
import sys

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


def test_progress_in_a_log_is_lines_with_rate_and_eta():
    """Not a terminal: one newline-terminated line per interval and one at the end, never a carriage return."""
    import io

    from linkstyle.runtime import LogProgress, progress

    now = [0.0]
    out = io.StringIO()
    bar = LogProgress(100, "tune resnet18 shard 0", stream=out, interval=30.0, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 10.0
        bar.update(10)
    bar.set_postfix(loss="0.123")
    bar.close()
    bar.close()  # once
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4
    assert lines[0] == "tune resnet18 shard 0: 30/100 img (30%), 1.0 img/s, 0:30 elapsed, ETA 1:10"
    assert lines[-1].startswith("tune resnet18 shard 0: 100/100 img (100%)") and lines[-1].endswith("loss 0.123")
    assert isinstance(progress(3, "x"), LogProgress)  # pytest captures stderr: not a terminal


def test_setup_torch_turns_on_deterministic_kernels_without_importing_the_compiler():
    """The kernel switch alone: torch.use_deterministic_algorithms would import torch._inductor (1.3 s)."""
    code = ("import sys, torch; from linkstyle.runtime import setup_torch; setup_torch(1); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._inductor' in sys.modules, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False", "1"], out
