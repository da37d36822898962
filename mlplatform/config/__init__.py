"""Typed platform config: parsed and validated once, before any resource exists."""

from mlplatform.config.load import ResolvedConfig, load_stack, resolve
from mlplatform.config.model import PlatformConfig
from mlplatform.config.problems import ConfigError, Problem

__all__ = ["ConfigError", "PlatformConfig", "Problem", "ResolvedConfig", "load_stack", "resolve"]
