"""Pulumi's automatic debug log, kept off in the project's own Pulumi home.

Since v3.2xx every Pulumi command writes a gzip-compressed (encrypted once the stack's secrets
manager is known) debug-level log of everything it does to `$PULUMI_HOME/logs`, with each
resource's inputs and outputs marshalled into it; the CLI has no switch for it. In a cold `up`
of the Kubeflow services that log was three quarters of the CLI's CPU (docs/benchmarks.md). The CLI
skips it when it cannot create that folder, so in the Pulumi home the project sets
(`.mlplatform/pulumi-home`) `logs` is a file that says why. A Pulumi home the user chose
(`PULUMI_HOME` set) is left as it is.

`MLPLATFORM_PULUMI_DEBUG_LOG=on` turns the log back on (e.g. to attach one to a support case).
`pulumi up -v=9 --logtostderr` still logs on demand either way.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

SETTING = "MLPLATFORM_PULUMI_DEBUG_LOG"
NOTE = """\
Pulumi's automatic debug log is off in this Pulumi home: the CLI cannot create its `logs` folder
while this file is here, and skips the log. mlplatform writes this file (see
mlplatform/pulumi_log.py). Set MLPLATFORM_PULUMI_DEBUG_LOG=on for the next command to have the
log again, or log on demand with `pulumi up -v=9 --logtostderr`.
"""


def setting(env: Mapping[str, str]) -> str:
    """The switch's value, "off" unless set; anything but "on" or "off" is refused."""
    wanted = env.get(SETTING, "off")
    if wanted not in ("on", "off"):
        raise ValueError(f"{SETTING}={wanted!r}: allowed are 'on' and 'off'")
    return wanted


def apply(env: Mapping[str, str], own_home: Path) -> None:
    """Turn the automatic log off (default) or on for commands run with `env`, when `env`'s
    Pulumi home is the project's own (`own_home`)."""
    wanted = setting(env)
    home = Path(env.get("PULUMI_HOME", ""))
    if home != own_home:
        return
    logs = home / "logs"
    if wanted == "on":
        if logs.is_file():
            logs.unlink()
        return
    if logs.is_file():
        return
    if logs.is_dir():
        # Logs of earlier commands: kept beside, one generation.
        kept = home / "logs.before-off"
        if kept.exists():
            shutil.rmtree(kept)
        logs.rename(kept)
    home.mkdir(parents=True, exist_ok=True)
    logs.write_text(NOTE)
