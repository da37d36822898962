"""Only this project's frames in the stack trace Pulumi records for each resource.

The Python SDK sends the whole call stack with every registration (asyncio, the SDK's runtime,
the language host), and the engine stores it beside the resource in the state. The file
backend rewrites the whole state after every step of an `up`, so each frame is paid for at
every step: with 500 teams, stack traces were 30% of the state, most of them frames outside
the project, and the state's size is what makes a cold `up` grow with the square of the stack.
The project's own frames (the first of them is the resource's source position) are what point
at the code that declared a resource; they stay, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi.runtime.resource as sdk_resource

PACKAGE_URI = Path(__file__).resolve().parent.as_uri() + "/"


def project_frame(uri: str, program_uri: str) -> bool:
    """A frame of this package, or of the Pulumi program's own entry point."""
    return uri.startswith(PACKAGE_URI) or uri == program_uri


def project_frames(trace: Any, program_uri: str) -> Any:
    """`trace` (a pulumirpc StackTrace) with the frames outside the project left out."""
    return type(trace)(frames=[frame for frame in trace.frames if project_frame(frame.pc.uri, program_uri)])


def keep_project_frames_only() -> bool:
    """Wrap the SDK's stack capture, once per process, so that what it sends holds only the
    project's frames; False where the pinned SDK's capture is not there to wrap (the state then
    keeps whole traces, nothing else changes). The program's entry point is the `__main__.py` of
    the working directory, where the engine runs the program."""
    capture: Callable[[], Any] | None = getattr(sdk_resource, "_get_stack_trace", None)
    if capture is None:
        return False
    if getattr(capture, "keeps_project_frames_only", False):
        return True
    program_uri = (Path.cwd() / "__main__.py").resolve().as_uri()

    def capture_project_frames() -> Any:
        return project_frames(capture(), program_uri)

    capture_project_frames.keeps_project_frames_only = True  # type: ignore[attr-defined]
    capture_project_frames.__wrapped__ = capture  # type: ignore[attr-defined]
    sdk_resource._get_stack_trace = capture_project_frames
    return True
