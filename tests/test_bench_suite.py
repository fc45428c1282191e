"""The benchmark suite's runner, with tiny fake benchmark modules written into a temporary folder
(the real benchmarks are far too heavy for a test): each runs in its own real process, and the
suite combines their results into one table, one JSON file and PNG plots; a module that is
missing, lacks a prerequisite, crashes, dies or hangs is reported, never fatal; ``--compare``
fails on a regression and passes an equal run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import suite
from quayside import bench

ROOT = Path(__file__).resolve().parents[1]

FAKE = '''
"""A fake benchmark: latencies and rates scaled by FAKE_SCALE (its floor by FAKE_FLOOR_SCALE)."""
import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks._common import latency_stats, write_result


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    scale = float(os.environ.get("FAKE_SCALE", "1"))
    floor = float(os.environ.get("FAKE_FLOOR_SCALE", "1"))
    samples = np.random.default_rng(7).lognormal(6.5, 0.4, 20_000)
    rows = [
        {"name": "fake ring ping-pong", "key": "rtt", "group": "pingpong", "latency": latency_stats(samples * scale),
         "compare": "x1.10 floor", "verdict": "PASS"},
        {"name": "  fake stage", "key": "rtt_stage", "group": "pingpong", "parent": "rtt",
         "latency": latency_stats(samples * scale / 3)},
        {"name": "fake floor ping-pong", "key": "floor", "group": "pingpong", "kind": "floor",
         "latency": latency_stats(samples * floor)},
        {"name": "fake stream", "key": "stream", "group": "throughput", "records_per_s": 2e7 / scale},
        {"name": "fake floor stream", "key": "floor_stream", "group": "throughput", "kind": "floor",
         "records_per_s": 5e7 / floor},
        {"name": "fake asyncio stream", "key": "asyncio", "group": "throughput", "kind": "baseline",
         "records_per_s": 3e5},
        {"name": "fake start-up", "key": "startup", "group": "startup", "seconds_median": 1.5 * scale},
    ]
    targets = [{"id": "rtt", "description": "fake p50 <= 2 us", "verdict": "PASS", "evidence": "p50 0.7 us"}]
    write_result(args.out, {"benchmark": "fake", "quick": args.quick, "groups": ["pingpong"], "machine": {},
                            "measurements": rows, "targets": targets, "errors": [],
                            "notes": [f"pinned to {os.environ.get('QUAYSIDE_BENCH_CPUS')}"]})
    print("fake table")
    return 0
'''

MODULES = {
    "crash": "raise RuntimeError('boom: the fake benchmark fell over')",
    "killed": "import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)",
    "skip": "from benchmarks._common import Skip\n    raise Skip('no Docker engine at unix:///nowhere')",
    "needs": "import not_a_real_peer_package  # noqa: F401",
    "partial": textwrap.dedent(
        """\
        from benchmarks._common import write_result
        write_result(Path(argv[argv.index('--out') + 1]), {"benchmark": "partial", "measurements": [
            {"name": "half done", "key": "half", "group": "a", "events_per_s": 1e6}],
            "targets": [], "errors": [{"group": "b", "error": "ChildError: b died"}], "notes": []})
        return 1"""
    ).replace("\n", "\n    "),
    "hang": "import time\n    time.sleep(120)",
}


@pytest.fixture
def fakes(tmp_path) -> Path:
    folder = tmp_path / "fakes"
    folder.mkdir()
    (folder / "fakebench_fake.py").write_text(FAKE)
    for name, body in MODULES.items():
        (folder / f"fakebench_{name}.py").write_text(f"from pathlib import Path\n\n\ndef main(argv):\n    {body}\n")
    return folder


def _run(fakes: Path, argv: list[str], names: list[str]) -> int:
    args = suite.build_parser().parse_args(argv)
    modules = {n: f"fakebench_{n}" for n in names} | {"absent": "fakebench_absent"}
    return suite.run(args, ROOT, modules=modules, python_path=[fakes])


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
        assert im.format == "PNG"
        return im.size


def test_one_table_one_json_and_plots_and_every_failure_reported(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    names = ["crash", "killed", "fake", "skip", "needs", "partial", "hang"]
    code = _run(fakes, ["--quick", "--out", str(out), "--timeout", "5", "--only", ",".join([*names, "absent"])], names)
    printed = capsys.readouterr().out
    assert code == 1  # crashes and errors make the suite fail, after the rest ran

    doc = json.loads((out / "suite.json").read_text())
    status = {m["name"]: m for m in doc["modules"]}
    assert {n: m["status"] for n, m in status.items()} == {
        "crash": "CRASHED",
        "killed": "CRASHED",
        "fake": "OK",
        "skip": "SKIPPED",
        "needs": "SKIPPED",
        "partial": "ERRORS",
        "hang": "TIMEOUT",
        "absent": "SKIPPED",
    }
    assert "RuntimeError: boom: the fake benchmark fell over" in status["crash"]["reason"]
    assert "signal 9" in status["killed"]["reason"]
    assert status["skip"]["reason"] == "no Docker engine at unix:///nowhere"
    assert "'not_a_real_peer_package'" in status["needs"]["reason"]
    assert "does not exist" in status["absent"]["reason"]
    assert "b" in status["partial"]["reason"]
    assert "RuntimeError" in Path(status["crash"]["log"]).read_text()  # the traceback is kept

    # the module after the crashes ran, with the suite's CPU choice, and its result is embedded
    fake = doc["results"]["fake"]
    assert fake["quick"] is True and fake["schema"] == 1
    assert fake["notes"] == [f"pinned to {doc['cpus']['a']},{doc['cpus']['b']}"]
    assert doc["results"]["partial"]["measurements"][0]["key"] == "half"
    hist = fake["measurements"][0]["latency"]["histogram"]
    assert sum(hist["counts"]) == 20_000 and len(hist["edges_ns"]) == len(hist["counts"]) + 1

    machine = doc["machine"]
    for key in ("python", "numpy", "numba", "kernel", "cpu_model", "git_commit", "git_dirty"):
        assert key in machine
    assert machine["git_commit"] and len(machine["git_commit"]) == 40
    host = doc["host"]
    assert host["isolated_cpus"] == sorted(host["isolated_cpus"])
    assert host["host_check"]["totals"]["PASS"] + host["host_check"]["totals"]["FAIL"] > 0
    assert doc["cpus"]["a"] in host["online_cpus"] and doc["cpus"]["b"] in host["online_cpus"]

    # one table: every module's rows, and one line for each module that gave none
    lines = printed.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("module"))
    table = lines[head : lines.index("", head)]
    assert len(table) == 2 + 7 + 1 + 6  # header, rule, the fake's rows, partial's row, 6 without rows
    assert any(line.startswith("fake ") and "fake ring ping-pong" in line and "PASS" in line for line in table)
    assert any(line.startswith("skip ") and "SKIPPED: no Docker engine" in line for line in table)
    assert any(line.startswith("crash ") and "CRASHED" in line for line in table)
    assert any(line.startswith("hang ") and "TIMEOUT" in line for line in table)
    assert "PASS         fake: fake p50 <= 2 us" in printed
    assert "note: fake: pinned to" in printed

    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["fake-latency.png", "fake-throughput.png", "partial-throughput.png"]
    assert doc["plots"] == [f"plots/{p}" for p in ["fake-latency.png", "fake-throughput.png", "partial-throughput.png"]]
    for p in plots:
        w, h = _valid_png(out / "plots" / p)
        assert w >= 600 and h >= 200


def test_compare_passes_an_equal_run_and_flags_a_regression(fakes, tmp_path, capsys, monkeypatch):
    old, same, slow = tmp_path / "old", tmp_path / "same", tmp_path / "slow"
    assert _run(fakes, ["--out", str(old), "--only", "fake", "--no-plots"], ["fake"]) == 0
    assert (
        _run(
            fakes, ["--out", str(same), "--only", "fake", "--no-plots", "--compare", str(old / "suite.json")], ["fake"]
        )
        == 0
    )
    assert "no regressions" in capsys.readouterr().out
    equal = json.loads((same / "suite.json").read_text())["comparison"]
    assert equal["regressions"] == 0 and {r["status"] for r in equal["rows"]} == {"same"}

    monkeypatch.setenv("FAKE_SCALE", "1.6")  # Quayside's figures 60 % worse, the floors unchanged
    code = _run(
        fakes, ["--out", str(slow), "--only", "fake", "--no-plots", "--compare", str(old / "suite.json")], ["fake"]
    )
    printed = capsys.readouterr().out
    assert code == 1
    rows = {r["key"]: r for r in json.loads((slow / "suite.json").read_text())["comparison"]["rows"]}
    assert {k: r["status"] for k, r in rows.items() if r["status"] == "REGRESSED"} == {
        "rtt": "REGRESSED",
        "stream": "REGRESSED",
        "startup": "REGRESSED",
    }
    assert rows["rtt_stage"]["status"] == "worse"  # a stage breakdown: reported, not judged
    assert rows["floor"]["status"] == "same" and rows["asyncio"]["status"] == "same"
    assert "3 regressions" in printed

    # the same figures beside floors that got as much worse: the machine, not the code (the
    # start-up time has no floor to explain it)
    monkeypatch.setenv("FAKE_FLOOR_SCALE", "1.6")
    busy = tmp_path / "busy"
    args = ["--out", str(busy), "--only", "fake", "--no-plots", "--compare", str(old / "suite.json")]
    assert _run(fakes, args, ["fake"]) == 1
    rows = {r["key"]: r for r in json.loads((busy / "suite.json").read_text())["comparison"]["rows"]}
    assert rows["rtt"]["status"] == "machine" and rows["stream"]["status"] == "machine"
    assert rows["startup"]["status"] == "REGRESSED"

    # a generous tolerance lets the slow run pass; one module's own JSON is a valid baseline too
    args = ["--load", str(slow / "suite.json"), "--no-plots", "--compare", str(old / "fake.json")]
    assert _run(fakes, args, ["fake"]) == 1
    assert _run(fakes, [*args, "--tolerance", "0.7"], ["fake"]) == 0


def test_markdown_table_from_a_saved_run(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(fakes, ["--out", str(out), "--only", "fake,skip", "--no-plots"], ["fake", "skip"]) == 0
    capsys.readouterr()
    assert _run(fakes, ["--load", str(out / "suite.json"), "--markdown", "--no-plots"], ["fake"]) == 0
    md = capsys.readouterr().out
    assert "| module | benchmark | p50 µs |" in md
    assert "| fake | fake ring ping-pong |" in md
    assert "| skip |" in md and "SKIPPED: no Docker engine" in md
    assert "| fake | fake p50 <= 2 us | PASS |" in md


def test_bad_options_are_clear_errors(fakes, tmp_path, capsys):
    assert _run(fakes, ["--only", "fake,nope", "--out", str(tmp_path)], ["fake"]) == 2
    assert "unknown module(s) nope" in capsys.readouterr().err
    assert _run(fakes, ["--load", str(tmp_path / "missing.json")], ["fake"]) == 2
    assert "--load" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    assert _run(fakes, ["--only", "fake", "--compare", str(tmp_path / "junk.json")], ["fake"]) == 2
    assert "not a benchmark result" in capsys.readouterr().err
    assert _run(fakes, ["--only", "fake", "--cpus", "0", "--out", str(tmp_path)], ["fake"]) == 2
    assert "--cpus" in capsys.readouterr().err


def test_quayside_bench_finds_the_checkout_or_says_it_needs_one(fakes, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert _run(fakes, ["--out", str(out), "--only", "fake", "--no-plots"], ["fake"]) == 0
    # the installed command, run outside the checkout, finds it through the editable install
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("quayside")), "bench", "--load", str(out / "suite.json"), "--no-plots"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert "fake ring ping-pong" in proc.stdout

    assert bench.find_checkout(ROOT / "docs") == ROOT
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "site" / "quayside" / "bench.py"))
    with pytest.raises(bench.CheckoutNotFound, match="run `quayside bench` from a clone"):
        bench.find_checkout(tmp_path)


def _doc(rows: list[dict], quick: bool = False) -> dict:
    return {"benchmark": "m", "quick": quick, "machine": {"cpu_model": "x"}, "measurements": rows}


def test_compare_allows_a_rows_own_spread_and_calls_a_disturbed_run_noisy():
    from benchmarks._suite_compare import compare

    def rate(value, seconds=None, preempted=None):
        return {"key": "r", "name": "r", "events_per_s": value, "preempted": preempted, "detail": {"seconds": seconds}}

    # 30 % fewer events/s, but this row's own runs spread by 50 %: not a regression
    c = compare(_doc([rate(10e6, [1.0, 1.5])]), _doc([rate(7e6, [1.5, 1.7])]), 0.25)
    assert c["rows"][0]["status"] == "same" and c["rows"][0]["allowed"] == 0.5
    # the same slow-down with a tight spread is one, unless others took the CPU from that run
    assert compare(_doc([rate(10e6)]), _doc([rate(6e6)]), 0.25)["regressions"] == 1
    c = compare(_doc([rate(10e6)]), _doc([rate(6e6, preempted=0.6)]), 0.25)
    assert c["rows"][0]["status"] == "noisy" and c["regressions"] == 0
    # twice as fast is an improvement; a quick run against a full one is pointed out
    c = compare(_doc([rate(10e6)]), _doc([rate(20e6)], quick=True), 0.25)
    assert c["rows"][0]["status"] == "improved"
    assert c["warnings"] == ["comparing a quick run with a full one"]
