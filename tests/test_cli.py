"""The command line: python -m microgpt_fast.train, run as a subprocess.

The default run must print the pure-Python reference's output line for line
(tests/data/default_run_reference.txt), then one summary line.
"""

from __future__ import annotations

import json
import re

import pytest

from microgpt_fast.config import GPTConfig
from microgpt_fast.kernels import VARIANTS, cpu_count

from helpers import DATA_DIR, KERNELS, cli_env, run_cli

HEADER = ["num docs: 32033", "vocab size: 27", "num params: 4192"]
SUMMARY = re.compile(
    r"^trained (\d+) steps in \d+\.\d{3} s \(\d+\.\d us/step, \d+\.\d+ (?:M |k |)tokens/s; "
    r"(compiled/(" + "|".join(VARIANTS) + r")|reference), (float64|float32), (\d+) threads?\)$")


def step_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("step ")]


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return ok(run_cli([], cwd=tmp_path_factory.mktemp("cli")))


def test_default_run_reproduces_reference_output(default_run):
    expected = (DATA_DIR / "default_run_reference.txt").read_text().splitlines()
    lines = default_run.stdout.splitlines()
    assert len(lines) == len(expected) + 1
    for i, (got, want) in enumerate(zip(lines, expected)):
        assert got == want, f"line {i + 1}: {got!r} != {want!r}"
    match = SUMMARY.match(lines[-1])
    assert match, lines[-1]
    assert match.group(1) == "1000"
    assert match.group(2).startswith("compiled/")
    assert match.group(4) == "float64"
    assert match.group(5) == "1" and lines[-1].endswith("1 thread)")
    assert default_run.stderr == ""


def test_first_steps_of_default_schedule(tmp_path):
    result = ok(run_cli(["--steps", "1000", "--log-every", "1", "--num-samples", "0"],
                        cwd=tmp_path))
    lines = result.stdout.splitlines()
    assert lines[:3] == HEADER
    assert lines[3:6] == ["step    1 / 1000 | loss 3.3660",
                          "step    2 / 1000 | loss 3.4243",
                          "step    3 / 1000 | loss 3.1778"]
    assert len(step_lines(result.stdout)) == 1000


def test_short_run_prints_header_steps_samples(tmp_path):
    result = ok(run_cli(["--steps", "3"], cwd=tmp_path))
    lines = result.stdout.splitlines()
    assert lines[:3] == HEADER
    steps = step_lines(result.stdout)
    assert [s.split("|")[0].strip() for s in steps] == ["step    1 /    3",
                                                         "step    2 /    3",
                                                         "step    3 /    3"]
    assert all(re.fullmatch(r"step +\d+ / +\d+ \| loss \d+\.\d{4}", s) for s in steps)
    assert "--- inference (new, hallucinated names) ---" in lines
    assert sum(line.startswith("sample ") for line in lines) == 20
    assert SUMMARY.match(lines[-1]).group(1) == "3"


def test_json_to_stdout(tmp_path):
    result = ok(run_cli(["--steps", "7", "--num-samples", "4", "--json", "-"], cwd=tmp_path))
    record = json.loads(result.stdout)
    for key in ("config", "engine", "dtype", "threads", "final_loss", "losses",
                "train_seconds", "us_per_step", "us_per_doc", "tokens_per_second", "samples"):
        assert key in record, key
    assert record["config"] == GPTConfig(vocab_size=27).to_dict()
    assert record["config"]["n_embd"] == 16 and record["config"]["block_size"] == 16
    assert record["engine"] == "compiled" and record["dtype"] == "float64"
    assert record["threads"] == 1
    assert len(record["losses"]) == 7
    assert record["final_loss"] == record["losses"][-1]
    # the tail loss, the sweeps' ranking figure: the mean of the last tenth (here 1 of 7)
    assert record["tail_loss"] == record["losses"][-1]
    assert len(record["samples"]) == 4 and all(isinstance(s, str) for s in record["samples"])
    assert record["train_seconds"] > 0 and record["tokens_per_second"] > 0
    assert record["us_per_doc"] == pytest.approx(record["us_per_step"])
    # the text output moved to stderr, with the same losses
    assert HEADER[0] in result.stderr
    logged = [float(s.rsplit(" ", 1)[1]) for s in step_lines(result.stderr)]
    assert logged == [round(x, 4) for x in record["losses"]]


def test_json_to_file(tmp_path):
    path = tmp_path / "run.json"
    result = ok(run_cli(["--steps", "5", "--batch-size", "2", "--dtype", "float32",
                         "--json", path], cwd=tmp_path))
    record = json.loads(path.read_text())
    assert len(record["losses"]) == 5
    assert record["dtype"] == "float32"
    assert record["train_config"]["batch_size"] == 2
    assert record["us_per_doc"] == pytest.approx(record["us_per_step"] / 2)
    assert result.stdout.splitlines()[:3] == HEADER
    assert len(step_lines(result.stdout)) == 5


def test_log_every(tmp_path):
    result = ok(run_cli(["--steps", "35", "--log-every", "10", "--num-samples", "1"],
                        cwd=tmp_path))
    numbers = [int(s.split()[1]) for s in step_lines(result.stdout)]
    assert numbers == [10, 20, 30, 35]  # and always the last


def test_quiet(tmp_path):
    result = ok(run_cli(["--steps", "20", "--quiet", "--num-samples", "3"], cwd=tmp_path))
    assert step_lines(result.stdout) == []
    lines = result.stdout.splitlines()
    assert lines[:3] == HEADER
    assert sum(line.startswith("sample ") for line in lines) == 3
    assert SUMMARY.match(lines[-1])


def test_reference_engine_matches_compiled(tmp_path):
    args = ["--steps", "2", "--num-samples", "2"]
    ref = ok(run_cli(args + ["--engine", "reference"], cwd=tmp_path))
    comp = ok(run_cli(args, cwd=tmp_path))
    ref_steps, comp_steps = step_lines(ref.stdout), step_lines(comp.stdout)
    assert len(ref_steps) == 2
    assert ref_steps == comp_steps
    assert ref.stdout.splitlines()[:-1] == comp.stdout.splitlines()[:-1]  # samples too
    match = SUMMARY.match(ref.stdout.splitlines()[-1])
    assert match and match.group(2) == "reference"
    # the reference trains tens of tokens a second: a rate in M tokens/s would read 0.00
    rate = re.search(r"us/step, (\d+\.\d+) (M |k |)tokens/s", match.group(0))
    assert float(rate.group(1)) > 0 and rate.group(2) != "M "


def test_rate_in_a_unit_that_shows_its_digits():
    from microgpt_fast.train import rate_text
    assert rate_text(4.6e5) == "460.0 k tokens/s"
    assert rate_text(2.5e6) == "2.50 M tokens/s"
    assert rate_text(68.46) == "68.5 tokens/s"


def test_resuming_a_finished_run_prints_no_rate(tmp_path):
    ok(run_cli(["--steps", "5", "--num-samples", "0", "--save", "done.npz"], cwd=tmp_path))
    result = ok(run_cli(["--resume", "done.npz", "--num-samples", "0", "--json", "-"],
                        cwd=tmp_path))
    last = result.stderr.splitlines()[-1]
    assert last.startswith("trained 0 steps (compiled/"), last
    assert "inf" not in last and "tokens/s" not in last
    record = json.loads(result.stdout)  # strict JSON: no Infinity
    assert record["tokens_per_second"] is None and record["us_per_step"] is None


def test_no_samples_no_samples_header(tmp_path):
    result = ok(run_cli(["--steps", "3", "--num-samples", "0"], cwd=tmp_path))
    assert "inference" not in result.stdout
    assert not any(line.startswith("sample ") for line in result.stdout.splitlines())
    assert SUMMARY.match(result.stdout.splitlines()[-1])


FLAGS = ["--data", "--steps", "--batch-size", "--dtype", "--threads", "--n-embd", "--n-head",
         "--n-layer", "--block-size", "--learning-rate", "--beta1", "--beta2", "--eps",
         "--seed", "--temperature", "--num-samples", "--log-every", "--quiet", "--engine",
         "--kernel", "--json"]


def test_help(tmp_path):
    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0
    for flag in FLAGS:
        assert flag in result.stdout, flag


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_flag(tmp_path, kernel):
    result = ok(run_cli(["--kernel", kernel, "--steps", "5", "--num-samples", "2"],
                        cwd=tmp_path))
    match = SUMMARY.match(result.stdout.splitlines()[-1])
    assert match and match.group(3) == kernel


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_from_environment(tmp_path, kernel):
    result = ok(run_cli(["--steps", "2", "--num-samples", "0"], cwd=tmp_path,
                        env=cli_env(MICROGPT_FAST_KERNEL=kernel)))
    assert SUMMARY.match(result.stdout.splitlines()[-1]).group(3) == kernel


def test_threads_and_float32_in_summary(tmp_path):
    result = ok(run_cli(["--steps", "4", "--batch-size", "4", "--threads", "2",
                         "--dtype", "float32", "--num-samples", "1"], cwd=tmp_path))
    match = SUMMARY.match(result.stdout.splitlines()[-1])
    assert match and match.group(4) == "float32"
    assert int(match.group(5)) == min(2, cpu_count())


def test_custom_data_file(tmp_path, unicode_path, unicode_ds):
    result = ok(run_cli(["--data", unicode_path, "--steps", "3", "--block-size", "8",
                         "--num-samples", "5"], cwd=tmp_path))
    lines = result.stdout.splitlines()
    assert lines[0] == f"num docs: {len(unicode_ds.docs)}"
    assert lines[1] == f"vocab size: {unicode_ds.vocab_size}"
    samples = [line.split(": ", 1)[1] if ": " in line else ""
               for line in lines if line.startswith("sample ")]
    assert len(samples) == 5
    assert all(set(s) <= set(unicode_ds.chars) for s in samples)
