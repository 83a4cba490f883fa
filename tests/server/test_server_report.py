"""What a finished run leaves for a reader: report.md, plots, phases, TensorBoard events.

One small in-process run (digits, 3 clients, 2 rounds, no Ray) is shared by the tests.
"""

from __future__ import annotations

import json
import struct

import pytest
from flwr.app import Context, RecordDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from feddistill.config import from_mapping
from feddistill.config_load import load_config
from feddistill.inprocess import InProcessGrid, task_identity
from feddistill.server import app as server_app
from feddistill.server import recorder, results
from feddistill.server.loop import FederationRun

SMALL = {
    "dataset": "digits",
    "num-partitions": 3,
    "num-server-rounds": 2,
    "min-partition-size": 5,
    "teacher-models": "mlp",
    "student-model": "mlp",
    "batch-size": 64,
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = from_mapping({**SMALL, "out-dir": str(out)})
    present_at_summary: list[str] = []  # files in out-dir when summary.json is written

    def write_summary(out_dir, summary):
        present_at_summary.extend(sorted(p.name for p in out_dir.iterdir()))
        results.write_summary(out_dir, summary)

    with pytest.MonkeyPatch.context() as patch, task_identity():
        patch.setattr(recorder, "write_summary", write_summary)
        summary = FederationRun(cfg).run(InProcessGrid(cfg))  # type: ignore[arg-type]
    summary["present_at_summary"] = present_at_summary
    return out, cfg, summary


def test_summary_is_written_after_report_and_plots(finished_run):
    # summary.json ends the run for `feddistill run`, which then stops the ServerApp: a
    # plot written after it was lost (seen: only accuracy_vs_round.png left)
    _, _, summary = finished_run
    for name in (
        "report.md",
        "accuracy_vs_round.png",
        "accuracy_vs_uplink.png",
        "bytes_vs_round.png",
        "label_distribution.png",
    ):
        assert name in summary["present_at_summary"], name


def test_report_title_names_strategy_and_dataset(finished_run):
    # Prepare
    out, _, _ = finished_run
    # Execute
    first = (out / "report.md").read_text().splitlines()[0]
    # Assert
    assert first == "# feddistill on digits: feddistill run report"


def test_report_holds_config_versions_and_machine(finished_run):
    # Prepare
    out, _, _ = finished_run
    # Execute
    report = (out / "report.md").read_text()
    # Assert: every config key has a row; versions and machine are named
    assert "| student-model | mlp |" in report and "| update-bit-width | 4 |" in report
    for name in ("feddistill", "flwr", "torch", "ray", "python", "cpu", "gpu"):
        assert f"\n| {name} | " in report


def test_report_command_reproduces_the_config(finished_run):
    # Prepare: the equivalent command printed in report.md
    out, cfg, _ = finished_run
    report = (out / "report.md").read_text()
    command = report.split("```sh\n")[1].split("\n```")[0]
    # Execute: parse its --set pairs as `feddistill run` does
    import shlex

    words = shlex.split(command)
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    again = load_config(None, [*sets, f"out-dir={str(out)!r}"])
    # Assert
    assert words[:4] == ["feddistill", "run", "--out", str(out)]
    assert again == cfg


def test_phases_cover_loading_rounds_and_export_in_order(finished_run):
    # Prepare
    out, _, _ = finished_run
    # Execute
    records = [json.loads(line) for line in (out / "phases.jsonl").read_text().splitlines()]
    # Assert: each phase with the number of metrics rows written before it
    assert [(r["phase"], r["rows"]) for r in records] == [
        ("loading data (digits, 3 partitions)", None),
        ("waiting for 3 clients to connect", None),
        ("round 1/2", 0),
        ("round 2/2", 1),
        ("exporting student (mlp, int8 and pruned)", 2),
        ("writing report.md and plots", 2),
    ]


@pytest.mark.parametrize(
    "name", ["accuracy_vs_round.png", "accuracy_vs_uplink.png", "bytes_vs_round.png"]
)
def test_plots_are_png_images_of_the_set_size(finished_run, name):
    # Prepare
    out, _, _ = finished_run
    # Execute: width and height from the PNG header (IHDR)
    data = (out / name).read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    # Assert: 7.5 x 4.8 inches at 110 dpi
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == (825, 528)


def test_tensorboard_events_read_back_per_round_scalars(finished_run):
    # Prepare
    out, _, _ = finished_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # Execute
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    accuracy = events.Scalars("accuracy/overall")
    total = events.Scalars("bytes/cumulative_total")
    # Assert: one value per round, equal to the CSV's (float32 in the event file)
    assert {"accuracy/worst_domain", "loss/test", "bytes/downlink"} <= set(tags)
    assert any(t.startswith("accuracy/domain_") for t in tags)
    assert [e.step for e in accuracy] == [1, 2]
    assert [e.value for e in accuracy] == pytest.approx([r["accuracy"] for r in rows], rel=1e-6)
    assert total[-1].value == pytest.approx(
        rows[-1]["cumulative_uplink_bytes"] + rows[-1]["cumulative_downlink_bytes"], rel=1e-6
    )


def test_tensorboard_holds_the_config_as_text(finished_run):
    # Prepare
    out, _, _ = finished_run
    # Execute
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    # Assert
    assert "| student-model | mlp |" in text and "| dataset | digits |" in text


def test_out_dir_in_use_is_one_error_line_without_traceback(finished_run, monkeypatch):
    # Prepare: the ServerApp pointed at the finished run's out-dir, without resume
    out, cfg, _ = finished_run
    logged = []
    monkeypatch.setattr(server_app, "flwr_log", lambda level, msg, *args: logged.append(msg % args))
    context = Context(
        run_id=1, node_id=0, state=RecordDict(), run_config=cfg.to_kebab(), node_config={}
    )
    before = (out / "summary.json").read_text()
    # Execute: no exception reaches Flower, so Flower prints no traceback
    result = server_app.main(None, context)
    # Assert
    assert result is None
    assert len(logged) == 1 and "holds a previous run (checkpoint after round 2)" in logged[0]
    assert (out / "summary.json").read_text() == before
