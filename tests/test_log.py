"""What a run reports: the environment that produced it, progress lines and the perplexity curve."""

import math
import re

import jax

from rnn_jax import log


def test_the_environment_names_the_versions_the_devices_and_the_host():
    env = log.environment()
    assert env["jax"] == jax.__version__ and env["backend"] == jax.default_backend()
    assert env["device_count"] == jax.device_count() and env["device_kind"] == jax.devices()[0].device_kind
    assert env["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])
    assert {"python", "optax", "flax", "orbax", "numpy", "host", "cpu_model", "cpu_count", "cache"} <= set(env)


def test_cpu_info_has_its_fields_on_every_host():
    info = log.cpu_info()
    assert set(info) == {"cpu_model", "cpu_count", "cache"}
    assert info["cache"] is None or all(re.fullmatch(r"L\d", level) for level in info["cache"])


def test_times_read_as_hours_minutes_seconds():
    assert log.fmt_time(0) == "0:00:00"
    assert log.fmt_time(59.6) == "0:01:00"
    assert log.fmt_time(3 * 3600 + 2 * 60 + 1) == "3:02:01"


def test_a_progress_line_on_a_pipe(capsys):
    progress = log.Progress(total=100, start=0)
    progress.line(5, 12.3456, 81_234.4, middle="  val 13.000", extra="time traveller")
    progress.close()
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(
        r"epoch   5/100  ppl   12\.346  val 13\.000     81,234 tok/s  elapsed 0:00:00  left \d+:\d\d:\d\d"
        r"  \| time traveller",
        line,
    ), line


def test_the_curve_is_drawn_without_the_nonfinite_points(tmp_path):
    rows = [
        {"epoch": 1, "perplexity": 20.0, "val_perplexity": 21.0},
        {"epoch": 2, "perplexity": math.inf},
        {"epoch": 3, "perplexity": 8.0, "val_perplexity": None},
    ]
    log.plot_curve(rows, tmp_path / "curve.png", title="seq")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.plot_curve([], tmp_path / "empty.png")  # nothing to draw yet: an empty frame, not an error
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_text_for_tensorboard_is_shown_verbatim():
    assert log._code("a\n  b") == "    a\n      b"
