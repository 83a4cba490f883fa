"""GPU memory in use, as ``nvidia-smi`` shows it to a user, sampled while a run goes on.

:class:`GpuMemorySampler` is what ``feddistill bench gpu`` puts around each run: the
peak of ``nvidia-smi --query-gpu=memory.used`` (all GPUs summed) above what was in use
when sampling started, so CUDA contexts, library kernels, workspaces and PyTorch's
caching allocator all count.
"""

from __future__ import annotations

import subprocess
import threading


def parse_memory_used(text: str) -> list[int]:
    """MiB in use per GPU from ``nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits``.

    Args:
        text: the command's output, one integer per line (one line per GPU).

    Returns:
        MiB in use, one entry per GPU in the order printed.

    Raises:
        ValueError: if a non-empty line is not an integer.
    """
    values = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if not line.isdigit():
            raise ValueError(f"nvidia-smi memory.used line must be an integer (MiB), got {line!r}")
        values.append(int(line))
    return values


class GpuMemorySampler:
    """Peak GPU memory in use (all GPUs summed), sampled with ``nvidia-smi``, in MiB.

    ``baseline_mib`` is what was in use when :meth:`start` ran; ``peak_mib`` the highest
    sum seen until :meth:`stop`. Samples that fail (no ``nvidia-smi``, a timeout) are
    counted in ``failed_samples`` and skipped.
    """

    def __init__(self, interval_s: float = 0.2, command: str = "nvidia-smi") -> None:
        self.interval_s, self.command = interval_s, command
        self.baseline_mib = self.peak_mib = 0
        self.samples = self.failed_samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def read_mib(self) -> int | None:
        """MiB in use now, summed over GPUs; None when ``nvidia-smi`` fails."""
        try:
            out = subprocess.run(
                [self.command, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            return sum(parse_memory_used(out))
        except (OSError, subprocess.SubprocessError, ValueError):
            return None

    def start(self) -> None:
        """Read the baseline, then sample in a background thread."""
        self.baseline_mib = self.peak_mib = self.read_mib() or 0
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; ``peak_mib`` keeps the peak."""
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.is_set():
            used = self.read_mib()
            if used is None:
                self.failed_samples += 1
            else:
                self.samples += 1
                self.peak_mib = max(self.peak_mib, used)
            self._done.wait(self.interval_s)
