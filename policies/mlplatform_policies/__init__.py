"""The platform's CrossGuard policies. Importing this package only defines them: the pack's
`__main__.py` serves them to the Pulumi engine, `mlplatform policy check` runs them offline."""

from __future__ import annotations

from pulumi_policy import Policy

from mlplatform_policies.resource_policies import RESOURCE_POLICIES
from mlplatform_policies.stack_policies import STACK_POLICIES

PACK_NAME = "mlplatform"
POLICIES: list[Policy] = [*RESOURCE_POLICIES, *STACK_POLICIES]

__all__ = ["PACK_NAME", "POLICIES", "RESOURCE_POLICIES", "STACK_POLICIES"]
