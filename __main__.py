"""Pulumi entry point: all logic lives in the mlplatform package."""

import pulumi

from mlplatform.program import main_async

pulumi.run(main_async)
