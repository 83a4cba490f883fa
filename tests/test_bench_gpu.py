"""feddistill/benchmarks/gpu.py and gpu_memory.py: GPU memory sampling, run rows, the plan check."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from feddistill.benchmarks import gpu, gpu_memory
from feddistill.cli import BENCHMARK_HELP, BENCHMARKS


def _fake_smi(tmp_path: Path, body: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_parse_memory_used_reads_one_value_per_gpu() -> None:
    # Execute
    got = gpu_memory.parse_memory_used("1024\n 2048 \n\n")
    # Assert
    assert got == [1024, 2048]


def test_parse_memory_used_rejects_a_line_that_is_not_mib() -> None:
    with pytest.raises(ValueError, match="must be an integer \\(MiB\\), got 'N/A'"):
        gpu_memory.parse_memory_used("N/A")


def test_sampler_sums_the_gpus_nvidia_smi_reports(tmp_path: Path) -> None:
    # Prepare: two GPUs holding 1024 and 2048 MiB
    sampler = gpu_memory.GpuMemorySampler(command=_fake_smi(tmp_path, "printf '1024\\n2048\\n'"))
    # Execute
    used = sampler.read_mib()
    # Assert
    assert used == 3072


def test_sampler_without_nvidia_smi_reads_nothing_and_counts_failures(tmp_path: Path) -> None:
    # Prepare
    sampler = gpu_memory.GpuMemorySampler(interval_s=0.01, command=str(tmp_path / "no-such-smi"))
    # Execute
    sampler.start()
    while sampler.failed_samples == 0:
        pass
    sampler.stop()
    # Assert
    assert sampler.read_mib() is None
    assert (sampler.samples, sampler.peak_mib, sampler.baseline_mib) == (0, 0, 0)


def test_cpu_runs_give_the_client_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setattr(gpu.os, "cpu_count", lambda: 16)
    # Execute
    cpu = gpu.device_sets(["seed=1"], "cpu")
    cuda = gpu.device_sets(["seed=1"], "cuda")
    # Assert
    assert cpu == ["seed=1", "client-num-cpus=16", "device=cpu"]
    assert cuda == ["seed=1", "device=cuda"]


def _row(label: str, median: float, command: float) -> dict:
    return {
        "label": label,
        "status": "completed",
        "rounds": 3,
        "first_round_s": 2.0,
        "median_round_s": median,
        "command_s": command,
        "final_accuracy": 0.95,
        "peak_rss_bytes": 1024 * gpu.MIB,
        "gpu_peak_mib": 900 if label.endswith("cuda") else 0,
        "gpu_samples": 10 if label.endswith("cuda") else 0,
        "failed_clients": 0,
    }


def test_markdown_gives_cpu_over_cuda_ratios_and_dashes_without_samples() -> None:
    # Prepare: round 2.6 s on the CPU, 0.65 s on CUDA -> 4.0x; command 40 / 20 -> 2.0x
    results = {
        "gpu": "GPU X",
        "cpus": 16,
        "runs": [_row("default cuda", 0.65, 20.0), _row("default cpu", 2.6, 40.0)],
    }
    # Execute
    text = gpu.markdown(results)
    # Assert
    assert "- default: median round 4.0x faster on CUDA, command 2.0x" in text
    assert "| default cpu | 3 | 2.00 | 2.60 | 40.0 | 95.00 | 1024 | - |" in text
    assert "| default cuda | 3 | 2.00 | 0.65 | 20.0 | 95.00 | 1024 | 900 |" in text


def test_one_round_has_no_later_round_median() -> None:
    # Prepare
    row = {**_row("default cpu", 1.0, 40.0), "rounds": 1, "median_round_s": None}
    # Execute
    line = gpu.fmt_row(row)
    # Assert
    assert line.startswith("| default cpu | 1 | 2.00 | - | 40.0 |")


def test_parse_args_drops_repeated_jobs_and_appends_the_seed() -> None:
    # Execute
    args = gpu.parse_args(["--jobs", "default,default", "--devices", "cpu", "--seed", "4"])
    # Assert
    assert args.jobs == ["default"] and args.devices == ["cpu"]
    assert args.set == ["seed=4"]


def test_plan_check_line_says_failed_when_the_peak_exceeds_the_plan() -> None:
    # Prepare: the finding that changed CUDA_CONTEXT_BYTES: 12750 MiB on an "8 GB" plan
    run = {**_row("plan check", 0.9, 60.0), "rounds": 2, "gpu_peak_mib": 12750}
    plan = {
        "gpu_memory_gb": 8.0,
        "holds": False,
        "run": run,
        "plan": {
            "num_clients": 16,
            "per_client_bytes": 606_000_000,
            "client_num_gpus": 1 / 13,
            "clients_per_gpu": 13,
            "concurrency": 13,
        },
    }
    # Execute
    lines = gpu.plan_lines(plan)
    # Assert: 12750 MiB = 13.37 GB
    assert "13 clients per GPU, 13 at once" in lines[0]
    assert "peak GPU memory 12750 MiB (13.37 GB) of the 8 GB planned: check FAILED" in lines[1]


def test_bench_gpu_without_cuda_exits_2_and_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Execute
    code = gpu.main(["--out", str(tmp_path / "out")])
    # Assert
    assert code == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--jobs", "vgg"],
            "--jobs must be a comma list of default, resnet18; got 'vgg' (vgg unknown)",
        ),
        (
            ["--devices", "cuda,tpu"],
            "--devices must be a comma list of cuda, cpu; got 'cuda,tpu' (tpu",
        ),
        (["--jobs", ""], "--jobs must be a comma list of default, resnet18; got ''"),
        (["--timeout", "nan"], "--timeout must be a number of seconds > 0, got nan"),
        (["--plan-gpu-memory-gb", "nan"], "--plan-gpu-memory-gb must be a number >= 0, got nan"),
        (["--set", "nosuchkey=1"], "--set for the default job: "),
        (["--set", "num-partitions=0"], "num-partitions=0 is out of range"),
        (["--resnet18-rounds", "0"], "--resnet18-rounds must be >= 1, got 0"),
        (["--plan-gpu-memory-gb", "-1"], "--plan-gpu-memory-gb must be a number >= 0, got -1.0"),
        (["--timeout", "0"], "--timeout must be a number of seconds > 0, got 0.0"),
        (["--plan-clients", "0"], "--plan-clients must be >= 1, got 0"),
    ],
)
def test_bench_gpu_rejects_bad_arguments_before_any_run(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cpu_only_bench_measures_a_real_run_and_repeats_it_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: the smallest job (digits, mlp teacher and student, 1 round)
    argv = ["--out", str(tmp_path), "--jobs", "default", "--devices", "cpu"]
    argv += ["--plan-gpu-memory-gb", "0", "--set", 'dataset="digits"']
    argv += ["--set", 'teacher-models="mlp"', "--set", 'student-model="mlp"']
    argv += ["--set", "num-server-rounds=1", "--seed", "3", "--timeout", "600", "--repeat"]
    # Execute
    code = gpu.main(argv)
    # Assert: one completed row, read back from results.json
    results = json.loads((tmp_path / "results.json").read_text())
    (row,) = results["runs"]
    assert code == 0
    assert row["label"] == "default cpu" and row["status"] == "completed"
    assert row["rounds"] == 1 and row["round_seconds"] == [row["first_round_s"]]
    assert row["peak_rss_bytes"] > 0 and 0.0 <= row["final_accuracy"] <= 1.0
    assert "seed=3" in row["sets"] and "device=cpu" in row["sets"]
    assert results["repeat"]["identical"] is True
    assert results["repeat"]["run"]["label"] == "default cpu, again"
    text = (tmp_path / "results.md").read_text()
    assert "| default cpu | 1 |" in text
    assert "metrics.csv identical to the first run (timing aside): yes" in text


def test_gpu_is_a_registered_benchmark() -> None:
    assert BENCHMARKS["gpu"] == "gpu"
    assert "GPU memory" in BENCHMARK_HELP["gpu"]
