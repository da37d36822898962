"""Pulumi entry point: all logic lives in the mlplatform package."""

from mlplatform.program import main

main()
