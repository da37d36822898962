"""Progress of long steps: the live line on a terminal, one line per step elsewhere, and
`mlplatform tools`, which must stay silent on a cache hit."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import threading
import time

import pytest

from mlplatform import progress
from mlplatform.lock import Lock, Tool
from mlplatform.toolchain import build

# A step's closing line: label, outcome, elapsed, start time.
SUMMARY = re.compile(r"^(?P<label>.+): (?P<outcome>done|failed.*) in \d+\.\ds \(started \d\d:\d\d:\d\d\)$")
FAST = 0.02  # refresh interval of the live line in these tests


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _detected_mode(monkeypatch):
    """Each test sets the mode it means; no step or live line may outlive a test."""
    monkeypatch.delenv("MLPLATFORM_PROGRESS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # a fake terminal's width (it has no file descriptor)
    yield
    assert progress._open == []
    assert progress._live is None


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(FAST / 2)


def refresher_running() -> bool:
    return any(t.name == "mlplatform-progress" for t in threading.enumerate())


def test_plain_prints_one_line_per_step_when_it_ends_and_nothing_while_it_runs():
    stream = io.StringIO()
    with progress.step("build etcd v3.6.16", stream=stream, interval=FAST) as s:
        s.phase("go mod tidy")
        time.sleep(FAST * 5)
        assert stream.getvalue() == ""
    with progress.step("render stack lab", stream=stream, interval=FAST):
        pass
    lines = stream.getvalue().splitlines()
    assert [SUMMARY.match(line)["label"] for line in lines] == ["build etcd v3.6.16", "render stack lab"]
    assert all(SUMMARY.match(line)["outcome"] == "done" for line in lines)
    assert "\r" not in stream.getvalue()


def test_live_line_is_rewritten_in_place_with_the_elapsed_time_and_cleared_at_the_end():
    stream = FakeTTY()
    with progress.step("build kubernetes v1.35.4", stream=stream, interval=FAST) as s:
        s.phase("go build k8s.io/kubernetes/cmd/kube-apiserver")
        s._started -= 42  # as if it had run 42 seconds: the next refresh must say so
        wait_for(lambda: "42s)" in stream.getvalue())
        assert refresher_running()
    out = stream.getvalue()
    frames = out.split("\r")
    assert len(frames) > 3 and "\n" not in "".join(frames[:-2])  # redrawn in place, no new lines
    assert re.search(
        r"\rbuild kubernetes v1\.35\.4: go build k8s\.io/kubernetes/cmd/kube-apiserver  "
        r"\(started \d\d:\d\d:\d\d, 42s\)",
        out,
    )
    # Cleared (blanks over the last frame), then the outcome on a line of its own.
    cleared, summary = re.fullmatch(r"(?s).*\r( +)\r([^\r]*)\n", out).groups()
    assert len(cleared) >= len(frames[-3].rstrip())
    assert SUMMARY.match(summary)["outcome"] == "done"
    # The refresher is gone and writes nothing more.
    wait_for(lambda: not refresher_running())
    time.sleep(FAST * 5)
    assert stream.getvalue() == out


def test_the_live_line_fits_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    stream = FakeTTY()
    with progress.step("build kubernetes v1.35.4", stream=stream, interval=FAST) as s:
        s.phase("go build k8s.io/kubernetes/cmd/kube-controller-manager")
        frame = stream.getvalue().split("\r")[-1]
    assert len(frame.rstrip()) == 59  # the width less one column
    # Cut in the middle: the label's start, the phase's end and the time survive.
    assert re.fullmatch(r"build kubernetes\.\.\.ntroller-manager  \(started \d\d:\d\d:\d\d, 0s\)", frame.rstrip())


@pytest.mark.parametrize("stream_type", [io.StringIO, FakeTTY])
def test_a_failing_step_reports_failed_and_raises(stream_type):
    stream = stream_type()
    with pytest.raises(ValueError, match="boom"), progress.step("render stack lab", stream=stream, interval=FAST):
        raise ValueError("boom")
    last = stream.getvalue().split("\r")[-1].splitlines()
    assert len(last) == 1
    assert SUMMARY.match(last[0])["outcome"] == "failed"


def test_fail_marks_the_step_without_raising():
    stream = io.StringIO()
    with progress.step("section engine", stream=stream) as s:
        s.fail("exit 3")
    assert SUMMARY.match(stream.getvalue().strip())["outcome"] == "failed (exit 3)"
    assert s.elapsed() == s.elapsed()  # frozen once the step has ended


@pytest.mark.parametrize("stream_type", [io.StringIO, FakeTTY])
def test_off_prints_nothing(monkeypatch, stream_type):
    monkeypatch.setenv("MLPLATFORM_PROGRESS", "off")
    stream = stream_type()
    with progress.step("render stack lab", stream=stream, interval=FAST) as s:
        s.phase("program under mocks")
        time.sleep(FAST * 3)
    with pytest.raises(RuntimeError), progress.step("start local control plane", stream=stream):
        raise RuntimeError
    assert stream.getvalue() == ""
    assert not refresher_running()


def test_the_setting_overrides_detection(monkeypatch):
    assert progress.mode(FakeTTY()) == "live"
    assert progress.mode(io.StringIO()) == "plain"
    monkeypatch.setenv("MLPLATFORM_PROGRESS", "plain")
    assert progress.mode(FakeTTY()) == "plain"
    monkeypatch.setenv("MLPLATFORM_PROGRESS", "live")
    assert progress.mode(io.StringIO()) == "live"


def test_a_step_whose_output_goes_to_the_terminal_prints_only_its_closing_line():
    stream = FakeTTY()
    with progress.step("section toolchain", live=False, stream=stream, interval=FAST):
        time.sleep(FAST * 3)
        assert stream.getvalue() == ""
    assert SUMMARY.match(stream.getvalue().rstrip("\n"))


def test_phase_reaches_the_innermost_open_step_and_nothing_outside_one():
    progress.phase("nobody listens")  # no step open: no effect, no error
    stream = FakeTTY()
    with (
        progress.step("check tools", stream=stream, interval=60) as outer,
        progress.step("build etcd v3.6.16", report=False, stream=stream, interval=60) as inner,
    ):
        progress.phase("go mod tidy")
        assert (outer.current_phase, inner.current_phase) == ("", "go mod tidy")
        assert "\rcheck tools > build etcd v3.6.16: go mod tidy  (started " in stream.getvalue()
    # Only the outer step reports; report=False leaves the outcome to the caller.
    assert [SUMMARY.match(line)["label"] for line in stream.getvalue().split("\r")[-1].splitlines()] == ["check tools"]


def test_echo_does_not_run_into_the_live_line():
    stream = FakeTTY()
    out = io.StringIO()
    with progress.step("check tools", stream=stream, interval=60) as s:
        s.phase("etcd")
        before = stream.getvalue()
        progress.echo("tool etcd v3.6.16: cache", file=out)
        after = stream.getvalue()[len(before) :]
    assert out.getvalue() == "tool etcd v3.6.16: cache\n"
    assert re.fullmatch(r"\r +\r\rcheck tools: etcd  \(started \d\d:\d\d:\d\d, 0s\)", after)  # cleared, drawn again


def test_steps_in_threads_each_print_their_one_line():
    stream = io.StringIO()

    def work(n: int) -> None:
        with progress.step(f"step {n}", stream=stream) as s:
            s.phase("working")
            time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    labels = sorted(SUMMARY.match(line)["label"] for line in stream.getvalue().splitlines())
    assert labels == sorted(f"step {n}" for n in range(8))


# `mlplatform tools`: a fake tool, cached in a temporary MLPLATFORM_TOOL_CACHE (no Go build).


@pytest.fixture
def fake_tool(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_TOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "BIN_DIR", tmp_path / "bin")
    monkeypatch.setattr(build, "SHARE_DIR", tmp_path / "share")
    tool = Tool(
        name="fake-tool",
        module="example.com/fake",
        version="v1.0.0",
        binaries={"fake-tool": "example.com/fake/cmd/fake-tool"},
    )
    monkeypatch.setattr(
        "mlplatform.lock.load_lock", lambda: Lock(go_minimum="", python={}, tools={tool.name: tool}, raw={})
    )
    return tool


def cache(tool: Tool) -> None:
    folder = build.cached_dir(tool)
    (folder / "bin").mkdir(parents=True)
    binary = folder / "bin" / "fake-tool"
    binary.write_text("#!/bin/sh\n")
    (folder / "complete.json").write_text(json.dumps({"binaries": {"fake-tool": str(binary)}, "seconds": 3.0}))


@pytest.mark.parametrize("setting", ["live", "plain"])
def test_tools_on_a_cache_hit_print_the_table_and_no_progress(fake_tool, monkeypatch, capsys, setting):
    from mlplatform.cli import cmd_tools

    cache(fake_tool)
    monkeypatch.setenv("MLPLATFORM_PROGRESS", setting)
    assert cmd_tools(argparse.Namespace(only=None, rebuild=False, jobs=2)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert re.search(r"^fake-tool +v1\.0\.0 +cache +\d\d:\d\d:\d\d +\d+\.\d$", out, re.M)
    assert "\nfake-tool: built from source at v1.0.0 (cached, built in 3s)\n" in out
    assert (build.bin_dir() / "fake-tool").is_symlink()


def fake_build(tool: Tool) -> dict:
    progress.phase("go build example.com/fake/cmd/fake-tool")
    cache(tool)
    return {"fake-tool": build.cached_dir(tool) / "bin" / "fake-tool"}


def test_a_build_shows_tool_and_phase_live_and_leaves_the_row_to_the_table(fake_tool, monkeypatch):
    monkeypatch.setattr(build, "build_tool", fake_build)
    terminal = FakeTTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    result = build.ensure_tool(fake_tool)
    assert result.source == "built"
    shown = terminal.getvalue()
    assert "\rbuild fake-tool v1.0.0: go build example.com/fake/cmd/fake-tool  (started " in shown
    assert re.fullmatch(r"(?s).*\r +\r", shown)  # cleared, and no second line for the tool


def test_a_build_in_a_log_prints_no_line_of_its_own(fake_tool, monkeypatch, capsys):
    from mlplatform.cli import cmd_tools

    monkeypatch.setattr(build, "build_tool", fake_build)
    monkeypatch.setenv("MLPLATFORM_PROGRESS", "plain")
    assert cmd_tools(argparse.Namespace(only=None, rebuild=False, jobs=2)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert len(re.findall(r"^fake-tool ", out, re.M)) == 1
    assert re.search(r"^fake-tool +v1\.0\.0 +built +\d\d:\d\d:\d\d +\d+\.\d$", out, re.M)


def test_two_tools_build_at_once_and_each_row_comes_when_its_tool_is_done(tmp_path, monkeypatch, capsys):
    """Both builds must be under way together (each waits for the other at a barrier, which one
    at a time never passes), and the quick tool's row is printed before the slow one is done."""
    from mlplatform.cli import cmd_tools

    monkeypatch.setenv("MLPLATFORM_TOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "BIN_DIR", tmp_path / "bin")
    monkeypatch.setattr(build, "SHARE_DIR", tmp_path / "share")
    monkeypatch.setenv("MLPLATFORM_PROGRESS", "plain")
    tools = {
        name: Tool(name=name, module=f"example.com/{name}", version="v1.0.0", binaries={name: f"example.com/{name}"})
        for name in ("slow-tool", "quick-tool")
    }
    monkeypatch.setattr("mlplatform.lock.load_lock", lambda: Lock(go_minimum="", python={}, tools=tools, raw={}))
    both_started = threading.Barrier(2, timeout=5)
    quick_row_printed = threading.Event()

    def building(tool: Tool) -> dict:
        both_started.wait()
        if tool.name == "slow-tool":
            # capsys reads what has been printed so far: the quick tool's row, before this returns.
            assert quick_row_printed.wait(5)
        folder = build.cached_dir(tool) / "bin"
        folder.mkdir(parents=True)
        (folder / tool.name).write_text("#!/bin/sh\n")
        return {tool.name: folder / tool.name}

    def echo(text: str, file=None) -> None:
        print(text, file=file)
        if text.startswith("quick-tool "):
            quick_row_printed.set()

    monkeypatch.setattr(build, "build_tool", building)
    monkeypatch.setattr(progress, "echo", echo)
    assert cmd_tools(argparse.Namespace(only=None, rebuild=False, jobs=2)) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if re.match(r"\S+ +v1\.0\.0 ", line)]
    assert rows == ["quick-tool", "slow-tool"]
