"""The Go toolchain's environment, shared by the tool builds and the upstream sources fetched as
Go modules (the deployed program needs the latter, never the former)."""

from __future__ import annotations

import os


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env.setdefault("CGO_ENABLED", "0")
    # The checksum database is not reachable from every build host; the lock pins exact
    # versions and the proxy serves them over TLS. Set GOSUMDB to verify where it is reachable.
    env.setdefault("GOSUMDB", "off")
    return env
