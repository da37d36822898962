"""Typed platform config: parsed and typed once, before any resource exists. The rules between
fields sit above this package (mlplatform.validation: load_stack, resolve)."""

from mlplatform.config.load import ResolvedConfig
from mlplatform.config.model import PlatformConfig
from mlplatform.config.problems import ConfigError, Problem

__all__ = ["ConfigError", "PlatformConfig", "Problem", "ResolvedConfig"]
