"""The pack the Pulumi engine runs (`pulumi preview --policy-pack policies`). Constructing the
PolicyPack serves the policies to the engine until it exits, so nothing else happens here."""

import sys
from pathlib import Path

# The engine runs this file from the pack folder; the policies package sits beside it.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlplatform_policies import PACK_NAME, POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
