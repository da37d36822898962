"""The stack trace recorded with each resource holds the project's frames only."""

from __future__ import annotations

from pathlib import Path

import pulumi.runtime.resource as sdk_resource
from pulumi.runtime.proto import source_pb2

from mlplatform import stack_traces

PACKAGE = Path(stack_traces.__file__).resolve().parent
PROGRAM_URI = "file:///srv/platform/__main__.py"


def _trace(*uris: str) -> source_pb2.StackTrace:
    return source_pb2.StackTrace(
        frames=[source_pb2.StackFrame(pc=source_pb2.SourcePosition(uri=uri, line=7)) for uri in uris]
    )


def test_frames_outside_the_project_are_left_out_and_the_rest_keep_their_order():
    ours = (PACKAGE / "modules" / "base.py").as_uri()
    tenancy = (PACKAGE / "modules" / "tenancy.py").as_uri()
    trace = _trace(
        ours,
        tenancy,
        PROGRAM_URI,
        "file:///usr/lib/python3.11/asyncio/base_events.py",
        "file:///srv/platform/.venv/lib/python3.11/site-packages/pulumi/runtime/stack.py",
        # A sibling directory whose name starts like the package's is not the package.
        PACKAGE.with_name(PACKAGE.name + "_extra").joinpath("x.py").as_uri(),
        "file:///srv/other/__main__.py",
    )
    kept = stack_traces.project_frames(trace, PROGRAM_URI)
    assert [frame.pc.uri for frame in kept.frames] == [ours, tenancy, PROGRAM_URI]
    assert all(frame.pc.line == 7 for frame in kept.frames)
    assert stack_traces.project_frames(_trace(), PROGRAM_URI).frames == []


def test_what_the_program_registers_carries_only_project_frames(run_stack, monkeypatch):
    assert stack_traces.keep_project_frames_only()
    installed = sdk_resource._get_stack_trace
    assert installed.keeps_project_frames_only
    # Installing again (a second program run in the process) does not wrap twice.
    assert stack_traces.keep_project_frames_only()
    assert sdk_resource._get_stack_trace is installed

    sent, full = [], []

    def spy():
        full.append(installed.__wrapped__())
        sent.append(installed())
        return sent[-1]

    monkeypatch.setattr(sdk_resource, "_get_stack_trace", spy)
    mocks, _ = run_stack("lab", fresh=True)
    assert len(sent) >= len(mocks.resources) > 100
    package = PACKAGE.as_uri() + "/"
    # Every registration is located in our code, by the first frame (its source position).
    assert all(trace.frames and trace.frames[0].pc.uri.startswith(package) for trace in sent)
    # What is sent is each full trace less its frames outside the package, in order.
    package_frames = [[f.pc.uri for f in trace.frames if f.pc.uri.startswith(package)] for trace in full]
    assert [[f.pc.uri for f in trace.frames] for trace in sent] == package_frames
    outside = [f.pc.uri for trace in full for f in trace.frames if not f.pc.uri.startswith(package)]
    assert any("/pulumi/runtime/" in uri for uri in outside) and any("/asyncio/" in uri for uri in outside)
    sent_frames = sum(len(trace.frames) for trace in sent)
    assert sent_frames < len(outside), (sent_frames, len(outside))
