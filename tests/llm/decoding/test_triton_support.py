"""Where the Triton kernels may run, and switching them off for the process after a failure."""

import pytest
import structlog
import torch
from structlog.testing import capture_logs

from runner.llm.decoding import triton_support

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def kernels_on():
    """Each test starts and ends with no recorded failure."""
    triton_support._FAILURES.clear()
    yield
    triton_support._FAILURES.clear()


@pytest.fixture
def card(monkeypatch):
    """Pretend the CUDA device has a given compute capability (no CUDA needed)."""
    pytest.importorskip("triton")

    def set_capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))

    return set_capability


def test_never_on_cpu():
    """CPU tensors take the torch paths (the CPU tests call the kernels directly)."""
    assert not triton_support.available(torch.device("cpu"))


def test_ampere_and_later_only(card):
    """Capability 8.0 and up runs the kernels; a Turing card (7.5) does not."""
    card(7, 5)
    assert not triton_support.available(CUDA)
    card(8, 0)
    assert triton_support.available(CUDA)
    card(9, 0)
    assert triton_support.available(CUDA)


def test_switch_off_holds_for_the_process_and_warns_once(card):
    """After a failure no caller gets the kernels, and the warning comes once, not per call."""
    card(9, 0)
    with capture_logs() as logs:
        log = structlog.get_logger()
        triton_support.switch_off(RuntimeError("Failed to find C compiler"), log)
        triton_support.switch_off(RuntimeError("again"), log)
    assert not triton_support.available(CUDA) and triton_support.switched_off()
    warnings = [e for e in logs if e["event"] == "triton_kernels_switched_off"]
    assert len(warnings) == 1 and "Failed to find C compiler" in warnings[0]["error"]
