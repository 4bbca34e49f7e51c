"""Every command in README.md and docs/*.md runs, so that the docs cannot drift
from the code.

What counts as a command: the lines of a fenced block tagged `sh` (a trailing
backslash continues a line, `#` starts a comment), and the lines after `$ ` in
a block tagged `console` (the lines without `$ ` are what it printed). Every
fence must carry one of the tags below, so that a command cannot hide in an
untagged block:

    sh        commands, run by this test
    sh norun  commands this test does not run (few: a build that replaces the
              installed modules)
    console   a command and what it printed; the command is run
    text      output, a table, a file layout: nothing to run
    python    Python (the API pages; tests/test_sweep.py runs the sweep one)

The commands of one file run in order, in one temporary folder (a later one
may read a file an earlier one saved), each within a timeout. So that the
whole takes seconds, each command line is rewritten first:

- `pip install ...` is left out (the suite runs in an installed tree, and
  .ci/run runs the README's install commands as written); what follows its
  `&&` runs. `pytest ...` is left out too (it is this suite, or the
  benchmarks, which .ci/run runs).
- `time` in front is dropped; `microgpt-fast-NAME` runs as
  `python -m microgpt_fast.NAME`, which is what the console script calls
  (test_console_scripts_call_the_commands checks that).
- Every command runs with OMP_NUM_THREADS=1 (two files run at a time, one per
  core); a --threads flag given still wins.
- train: --steps at most 6 (3 with --engine reference; --steps 6 where none is
  given, unless it resumes), --stop-at at most 3, --eval-every, --save-every
  and --log-every at most 2; with --eval-every, --eval-docs 4 (a few windows,
  not the whole held-out text); with --preset, --warmup-steps 1 (the preset's
  100 would not fit).
- train and sample: --num-samples at most 2, --max-len at most 40 (40 where
  none is given: a text sample draws 300 characters).
- sweep: --steps at most 12, --repeat 1, --random at most 2, the first two
  values of each --grid; with --data, --val-fraction 0.01 (each run evaluates
  all its held-out text).
- bench: --n-embd 16 (one width), --steps 20, --repeats 1, --reference-steps 0,
  --peak-size 128, --big-steps 1, --original-steps 3, --throughput-docs 32 and
  --batch-size at most 16; --original PATH
  runs tests/data/fake_microgpt.py (a stand-in that prints the original's
  lines) copied to PATH. A --breakdown command runs only where the profiling
  builds exist (it is skipped otherwise, and says so).
- A command that names a kernel variant this machine lacks (--kernel or
  --variants: avx512_bf16 needs AVX512-BF16) is left out.
  --torch is left out: PyTorch is an optional extra, and compiling its step
  takes seconds to minutes (tests/test_torch_model.py checks those rows).
- Without matplotlib (an install without the plot extra, as .ci/run's),
  --plot PATH and --plot-loss PATH are left out: the figures' own tests skip
  there too.
- Files a reader supplies are made in the folder first: my_notes.txt (a few
  lines of prose).
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from microgpt_fast.kernels import profiling_built

from helpers import KERNELS, REPO_ROOT, cli_env

DOCS = [REPO_ROOT / "README.md"] + sorted((REPO_ROOT / "docs").glob("*.md"))
TAGS = {"sh", "sh norun", "console", "text", "python"}
TIMEOUT_S = 120  # per command; each takes about a second here
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
FAKE_ORIGINAL = REPO_ROOT / "tests" / "data" / "fake_microgpt.py"
NOTES = ("Dear diary, today the model learned to spell.\n"
         "It still rhymes badly, but it rhymes.\n") * 40


def fenced_blocks(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line number of the opening fence, its tag, the block's lines) of a Markdown file."""
    blocks, tag, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            if tag is None:
                tag, start, lines = line[3:].strip(), number, []
            else:
                blocks.append((start, tag, lines))
                tag = None
        elif tag is not None:
            lines.append(line)
    assert tag is None, f"{path.name}: the fence opened on line {start} is never closed"
    return blocks


def commands(path: Path) -> list[tuple[int, str]]:
    """(line, command) of every command of path that is meant to run, in order."""
    found = []
    for start, tag, lines in fenced_blocks(path):
        if tag == "sh":
            logical, first = "", None
            for i, line in enumerate(lines):
                first = first or start + 1 + i
                if line.endswith("\\"):
                    logical += line[:-1] + " "
                    continue
                logical += line
                if logical.strip() and not logical.strip().startswith("#"):
                    found.append((first, logical.strip()))
                logical, first = "", None
        elif tag == "console":
            found += [(start + 1 + i, line[2:].strip()) for i, line in enumerate(lines)
                      if line.startswith("$ ")]
    return found


CAPS = {  # flag: the largest value a doc command keeps
    "train": {"--steps": 6, "--stop-at": 3, "--eval-every": 2, "--save-every": 2,
              "--log-every": 2, "--num-samples": 2, "--max-len": 40},
    "sample": {"--num-samples": 2, "--max-len": 40},
    "sweep": {"--steps": 12, "--repeat": 1, "--random": 2},
    "bench": {"--batch-size": 16},
}
BENCH_SET = {"--steps": "20", "--repeats": "1", "--reference-steps": "0", "--peak-size": "128",
             "--big-steps": "1", "--original-steps": "3", "--throughput-docs": "32"}


def rewrite(words: list[str], folder: Path) -> list[str] | None:
    """One command (words, without pip install or &&) as this test runs it, or
    None when it is not run; see the module docstring."""
    if words and words[0] == "time":
        words = words[1:]
    env = []
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        env.append(words.pop(0))
    if not words or words[0] in ("pip", "pytest"):
        return None
    m = re.fullmatch(r"microgpt-fast-(\w+)", words[0])
    if m:
        words = ["python", "-m", f"microgpt_fast.{m[1]}"] + words[1:]
    assert words[:2] == ["python", "-m"] and words[2].startswith("microgpt_fast."), words
    command, args = words[2].split(".", 1)[1], words[3:]
    out = []
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in ("--plot", "--plot-loss") and not HAVE_MATPLOTLIB:
            i += 2
        elif command == "bench" and flag == "--torch":
            i += 1
        elif command == "bench" and flag == "--n-embd":
            out += [flag, "16"]
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                i += 1
        elif command == "bench" and flag in BENCH_SET:
            out += [flag, BENCH_SET[flag]]
            i += 2
        elif command == "bench" and flag == "--original":
            shutil.copyfile(FAKE_ORIGINAL, folder / args[i + 1])
            out += [flag, args[i + 1]]
            i += 2
        elif command == "sweep" and flag == "--grid":
            name, values = args[i + 1].split("=", 1)
            out += [flag, name + "=" + ",".join(values.split(",")[:2])]
            i += 2
        elif flag in CAPS.get(command, {}):
            cap = CAPS[command][flag]
            if command == "train" and flag == "--steps" and "reference" in args:
                cap = 3
            out += [flag, str(min(int(args[i + 1]), cap))]
            i += 2
        else:
            out.append(flag)
            i += 1
    named = [out[i + 1] for i, flag in enumerate(out[:-1]) if flag == "--kernel"]
    if "--variants" in out:
        for word in out[out.index("--variants") + 1:]:
            if word.startswith("-"):
                break
            named.append(word)
    if any(name not in KERNELS for name in named):
        return None
    if command == "bench":
        out += [f for flag, value in BENCH_SET.items() if flag not in out for f in (flag, value)]
        if "--breakdown" in out and not profiling_built(KERNELS):
            return None
    if command == "train" and "--eval-every" in out and "--eval-docs" not in out:
        out += ["--eval-docs", "4"]
    if command == "train" and "--preset" in out:
        out += ["--warmup-steps", "1"]
    if command == "train" and "--steps" not in out and "--resume" not in out:
        out += ["--steps", "6"]
    if command in ("train", "sample") and "--max-len" not in out:
        out += ["--max-len", "40"]
    if command == "sweep" and "--data" in out:
        out += ["--val-fraction", "0.01"]
    return env + [sys.executable, "-m", f"microgpt_fast.{command}"] + out


def run_file(path: Path, folder: Path) -> list[str]:
    """Run every command of path in folder, in order; the failures, as messages."""
    (folder / "my_notes.txt").write_text(NOTES, encoding="utf-8")
    failures = []
    for line, text in commands(path):
        for part in text.split("&&"):
            words = rewrite(shlex.split(part, comments=True), folder)
            if words is None:
                continue
            env = cli_env(OMP_NUM_THREADS="1")
            while re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            try:
                result = subprocess.run(words, cwd=folder, env=env, capture_output=True,
                                        text=True, timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                failures.append(f"{path.name}:{line}: {shlex.join(words[2:])}: "
                                f"no end within {TIMEOUT_S} s")
                continue
            if result.returncode != 0:
                failures.append(f"{path.name}:{line}: {shlex.join(words[2:])}: exit "
                                f"{result.returncode}: {result.stderr.strip()[-500:]}")
    return failures


def test_every_fence_is_tagged():
    for path in DOCS:
        for start, tag, _ in fenced_blocks(path):
            assert tag in TAGS, f"{path.name}:{start}: fence tag {tag!r}, not one of {TAGS}"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_docs_resolve():
    """Every relative link names a file that exists and, after #, one of its headings."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, fragment = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.name}: link to {target}: no such file"
            if fragment:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"),
                                      flags=re.M)
                assert fragment in {anchor(h) for h in headings}, (
                    f"{path.name}: link to {target}: no such heading in {linked.name}")


def test_docs_have_commands():
    """Else the test below would pass on nothing."""
    counts = {path.name: len(commands(path)) for path in DOCS}
    assert counts["README.md"] >= 5 and sum(counts.values()) >= 30, counts


def test_every_doc_command_runs(tmp_path):
    """Each file's commands in order in a folder of its own; two files at a time,
    one per core (each command is a single process, mostly one-threaded)."""
    folders = {path: tmp_path / path.stem for path in DOCS}
    for folder in folders.values():
        folder.mkdir()
    longest_first = sorted(DOCS, key=lambda p: -len(commands(p)))  # the pool ends together
    with cf.ThreadPoolExecutor(2) as pool:
        failures = sum(pool.map(lambda p: run_file(p, folders[p]), longest_first), [])
    assert not failures, "\n".join(failures)


def test_readme_quick_start_is_what_ci_runs():
    """.ci/run runs the README's install and test commands as written: they
    must stay the README's first commands, word for word."""
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    ran = re.findall(r"^(pip install -e .*)$", ci, flags=re.M)
    first = [text for _, text in commands(REPO_ROOT / "README.md")][:2]
    assert ran[:2] == first, (ran, first)


def test_console_scripts_call_the_commands():
    """The rewrite above runs microgpt-fast-NAME as python -m microgpt_fast.NAME:
    pyproject's scripts must be exactly those commands' main()."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    scripts = dict(re.findall(r'^(\S+) = "(\S+)"$', section, flags=re.M))
    assert scripts == {f"microgpt-fast-{name}": f"microgpt_fast.{name}:main"
                       for name in ("train", "sample", "sweep")}


@pytest.mark.parametrize("words, expected", [
    ("time python -m microgpt_fast.train --steps 5000 --eval-every 1000",
     "-m microgpt_fast.train --steps 6 --eval-every 2 --eval-docs 4 --max-len 40"),
    ("python -m microgpt_fast.train --stop-at 500 --save half.npz",
     "-m microgpt_fast.train --stop-at 3 --save half.npz --steps 6 --max-len 40"),
    ("python -m microgpt_fast.train --resume half.npz", "-m microgpt_fast.train --resume "
     "half.npz --max-len 40"),
    ("microgpt-fast-sample --checkpoint a.npz --max-len 500",
     "-m microgpt_fast.sample --checkpoint a.npz --max-len 40"),
    ("python -m microgpt_fast.sweep --random 100 --repeat 3 --steps 3",
     "-m microgpt_fast.sweep --random 2 --repeat 1 --steps 3"),
    ("python -m microgpt_fast.sweep --data shakespeare --grid activation=relu,gelu,silu",
     "-m microgpt_fast.sweep --data shakespeare --grid activation=relu,gelu "
     "--val-fraction 0.01"),
    ("python -m microgpt_fast.train --engine reference --steps 20",
     "-m microgpt_fast.train --engine reference --steps 3 --max-len 40"),
    ("python -m microgpt_fast.train --preset nanogpt --steps 2000",
     "-m microgpt_fast.train --preset nanogpt --steps 6 --warmup-steps 1 --max-len 40"),
    ("python -m microgpt_fast.bench --n-embd 64 128 --reference-steps 40 --batch-size 64",
     "-m microgpt_fast.bench --n-embd 16 --reference-steps 0 --batch-size 16 --steps 20 "
     "--repeats 1 --peak-size 128 --big-steps 1 --original-steps 3 --throughput-docs 32"),
    ("python -m microgpt_fast.bench --torch --busy",
     "-m microgpt_fast.bench --busy --steps 20 --repeats 1 --reference-steps 0 --peak-size 128 "
     "--big-steps 1 --original-steps 3 --throughput-docs 32"),
])
def test_rewrite(tmp_path, words, expected):
    assert shlex.join(rewrite(shlex.split(words), tmp_path)[1:]) == expected


def test_rewrite_leaves_out_installs_and_the_suite(tmp_path):
    for words in ("pip install -e .", "MICROGPT_FAST_PROFILE=1 pip install -e .",
                  "pytest bench/ --benchmark-only"):
        assert rewrite(shlex.split(words), tmp_path) is None


def test_rewrite_without_matplotlib_leaves_out_the_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "HAVE_MATPLOTLIB", False)
    words = rewrite(shlex.split("python -m microgpt_fast.sweep --grid n_embd=8 --plot s.png"),
                    tmp_path)
    assert shlex.join(words[1:]) == "-m microgpt_fast.sweep --grid n_embd=8"
