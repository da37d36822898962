"""Monitoring rules a config must satisfy: what the environment's monitoring stack allows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlplatform.config.model import PlatformConfig
from mlplatform.environments import Profile

AddProblem = Callable[[tuple[Any, ...], str], None]


def monitoring_problems(config: PlatformConfig, profile: Profile, add: AddProblem) -> None:
    settings = config.modules.monitoring
    base = ("modules", "monitoring")
    if profile.user_workload_monitoring:
        for key, value in (("prometheus", settings.prometheus), ("alertmanager", settings.alertmanager)):
            if value is not None:
                add(
                    (*base, key),
                    f"the {profile.name} environment runs Prometheus and Alertmanager itself; we ship rules "
                    f"and monitors into its user workload monitoring (allowed: leave {key} out)",
                )
    prometheus = settings.prometheus
    if prometheus is not None and prometheus.storage_class is not None:
        classes = config.cluster.storage.classes
        if prometheus.storage_class not in classes:
            add(
                (*base, "prometheus", "storageClass"),
                f"{prometheus.storage_class!r} is not a storage class of the cluster (allowed: {', '.join(classes)})",
            )
    alerts = settings.alerts
    if alerts.gpu_temperature_warning_celsius >= alerts.gpu_temperature_critical_celsius:
        add(
            (*base, "alerts", "gpuTemperatureWarningCelsius"),
            f"{alerts.gpu_temperature_warning_celsius} is not below gpuTemperatureCriticalCelsius "
            f"({alerts.gpu_temperature_critical_celsius}) (allowed: a warning below the critical temperature)",
        )
