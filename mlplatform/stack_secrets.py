"""`mlplatform secrets`: which credentials a stack's services need, and values for those nobody
has to choose, stored encrypted with the Pulumi CLI (`pulumi config set --secret --path`).

Where they are stored depends on who shares the stack:

- a stack on the local control plane (no `cluster.kubeconfig`, and a stack file without secrets
  settings of its own) keeps them in a per-checkout config file, `.mlplatform/stacks/Pulumi.<stack>.yaml`
  (ignored by git): the committed stack file's config, the generated secure values and the
  encryption salt. Every `pulumi` command on it passes `--config-file` (`config_args`), so the
  quick start leaves the working tree as it found it;
- any other stack keeps them in its stack file, where colleagues sharing the state find them.
"""

from __future__ import annotations

import copy
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlplatform.config import ResolvedConfig
from mlplatform.config.load import stack_file
from mlplatform.config.model import SECRET_NAMES
from mlplatform.paths import REPO_ROOT, STATE_ROOT
from mlplatform.safe_write import atomic_write

PROJECT = "mlplatform"
SECRETS_KEY = f"{PROJECT}:secrets"
# Bytes of randomness in a generated value (token_urlsafe: 43 URL- and shell-safe characters).
GENERATED_BYTES = 32
# oauth2-proxy takes a cookie secret of 16, 24 or 32 bytes: 24 random bytes are 32 characters.
COOKIE_SECRET_BYTES = 24
# Stack file keys that say the file carries its own secrets settings.
SECRETS_SETTINGS_KEYS = ("encryptionsalt", "secretsprovider", "encryptedkey")


class SecretsError(RuntimeError):
    pass


@dataclass(frozen=True)
class SecretNeed:
    name: str
    # What the stack gives it to.
    uses: tuple[str, ...]
    # True where nobody has to choose the value: a credential of an in-cluster service.
    generatable: bool

    def set_command(self) -> str:
        return f"pulumi config set --secret --path {SECRETS_KEY}.{self.name} <value>"


def generatable(resolved: ResolvedConfig, name: str) -> bool:
    """Values the platform may choose: those of services it runs itself. A managed database's
    password, a cloud store's keys and an OIDC client secret are issued elsewhere."""
    from mlplatform.modules.ml_services import kubeflow_database

    platform = resolved.config.platform
    if name == "kubeflowDatabasePassword":
        return kubeflow_database(resolved).kind == "in-cluster"
    if name == "databasePassword":
        return platform.database.kind == "in-cluster"
    if name in ("objectStoreAccessKey", "objectStoreSecretKey"):
        return platform.object_store.kind == "in-cluster"
    if name == "identityClientSecret":
        # Dex is the client's issuer where it runs in the cluster; an external issuer issues it.
        return resolved.config.modules.identity.provider != "oidc"
    return name in ("mlflowAdminPassword", "mlflowOidcCookieSecret", "identityCookieSecret", "identityTestUserPassword")


def secret_needs(resolved: ResolvedConfig) -> list[SecretNeed]:
    """Every secret the stack's enabled services need, in SECRET_NAMES order."""
    from mlplatform.modules.registry import required_secrets

    uses: dict[str, list[str]] = {}
    for name, why in required_secrets(resolved):
        if why not in uses.setdefault(name, []):
            uses[name].append(why)
    return [SecretNeed(name, tuple(uses[name]), generatable(resolved, name)) for name in SECRET_NAMES if name in uses]


def new_value(name: str) -> str:
    if name in ("mlflowOidcCookieSecret", "identityCookieSecret"):
        return secrets.token_urlsafe(COOKIE_SECRET_BYTES)
    return secrets.token_urlsafe(GENERATED_BYTES)


def targets_local_plane(resolved: ResolvedConfig) -> bool:
    """As `mlplatform up` decides: without `cluster.kubeconfig` it starts the local plane."""
    return not resolved.config.cluster.kubeconfig


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    return document if isinstance(document, dict) else {}


def _write_yaml(path: Path, document: dict[str, Any]) -> None:
    """Whole or not at all; readable by the owner only (it holds ciphertext and the salt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, yaml.safe_dump(document, sort_keys=False), new_file_mode=0o600)


def _holds_secrets_settings(committed: Path) -> bool:
    """Whether a committed stack file carries its own secrets provider or salt."""
    document = _read_yaml(committed)
    return any(key in document for key in SECRETS_SETTINGS_KEYS)


def checkout_config_file(stack: str, stacks_dir: Path) -> Path | None:
    """The per-checkout config file `mlplatform up` keeps for a stack (StackSecrets.per_checkout),
    where there is one and the committed file in `stacks_dir` holds no secrets settings; else
    None: the committed file is the stack's config."""
    local = stack_file(stack, STATE_ROOT / "stacks")
    if not local.is_file() or _holds_secrets_settings(stack_file(stack, stacks_dir)):
        return None
    return local


@dataclass
class StackSecrets:
    """One stack's secrets and where they live; `env` is the Pulumi CLI's (cli.engine_env)."""

    stack: str
    resolved: ResolvedConfig
    env: dict[str, str]
    project: Path = REPO_ROOT
    local_dir: Path = field(default_factory=lambda: STATE_ROOT / "stacks")

    @property
    def stack_file(self) -> Path:
        return stack_file(self.stack, self.project / "stacks")

    @property
    def per_checkout(self) -> bool:
        return targets_local_plane(self.resolved) and not _holds_secrets_settings(self.stack_file)

    @property
    def local_file(self) -> Path:
        return stack_file(self.stack, self.local_dir)

    def config_file(self) -> Path:
        """The file the Pulumi CLI reads this stack's config from."""
        return self.local_file if self.per_checkout else self.stack_file

    def config_args(self) -> list[str]:
        return ["--config-file", str(self.local_file)] if self.per_checkout else []

    def stored(self) -> set[str]:
        """Names whose encrypted value the config file holds."""
        values = (_read_yaml(self.config_file()).get("config") or {}).get(SECRETS_KEY) or {}
        return {name for name, value in values.items() if isinstance(value, dict) and "secure" in value}

    def missing(self) -> list[SecretNeed]:
        stored = self.stored()
        return [need for need in secret_needs(self.resolved) if need.name not in stored]

    # -- the Pulumi CLI ------------------------------------------------------------------------

    def _pulumi(
        self, *args: str, cwd: Path | None = None, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        env = dict(self.env)
        # A per-checkout file written before the salt was known takes the state's secrets manager.
        env.setdefault("PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER", "true")
        proc = subprocess.run(
            ["pulumi", *args], cwd=cwd or self.project, env=env, input=stdin, capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            # The arguments only: a value goes through stdin and is never echoed back.
            tail = "\n  ".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            raise SecretsError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n  {tail}")
        return proc

    def ensure_stack(self) -> None:
        """The stack exists in the backend and its config file is current. A per-checkout stack is
        created from a scratch copy of the project: `stack init` writes the encryption salt into
        the stack file it finds, which must not be the committed one."""
        exists = self._pulumi("stack", "select", self.stack, check=False).returncode == 0
        if not self.per_checkout:
            if not exists:
                self._pulumi("stack", "init", self.stack, "--non-interactive")
            return
        salt = None
        if not exists:
            with tempfile.TemporaryDirectory(prefix="mlplatform-stack-") as scratch:
                shutil.copy(self.project / "Pulumi.yaml", scratch)
                self._pulumi("stack", "init", self.stack, "--non-interactive", cwd=Path(scratch))
                salt = _read_yaml(Path(scratch) / "stacks" / f"Pulumi.{self.stack}.yaml").get("encryptionsalt")
            self._pulumi("stack", "select", self.stack)
        self.sync(salt)

    def sync(self, salt: str | None = None) -> None:
        """The per-checkout file: the committed stack file's config (which may have changed since),
        the secure values generated before, and the salt."""
        committed = _read_yaml(self.stack_file)
        local = _read_yaml(self.local_file)
        config = copy.deepcopy(committed.get("config") or {})
        generated = (local.get("config") or {}).get(SECRETS_KEY)
        if generated and not salt:
            config[SECRETS_KEY] = generated
        document: dict[str, Any] = {}
        if salt or local.get("encryptionsalt"):
            document["encryptionsalt"] = salt or local["encryptionsalt"]
        document["config"] = config
        _write_yaml(self.local_file, document)

    def set(self, name: str, value: str) -> None:
        """`pulumi config set --secret --path`; the value on stdin, never on a command line."""
        key = f"{SECRETS_KEY}.{name}"
        self._pulumi(
            "config", "set", "--secret", "--path", key, "--stack", self.stack, *self.config_args(), stdin=value
        )

    def generate(self) -> tuple[list[str], list[SecretNeed]]:
        """Values for the missing generatable secrets; returns (generated, still missing)."""
        generated, remaining = [], []
        for need in self.missing():
            if need.generatable:
                self.set(need.name, new_value(need.name))
                generated.append(need.name)
            else:
                remaining.append(need)
        return generated, remaining

    def rotate(self, names: list[str]) -> list[str]:
        """New values for these secrets; refused (nothing set) where one is not generatable here."""
        needs = {need.name: need for need in secret_needs(self.resolved)}
        problems = []
        for name in names:
            if name not in SECRET_NAMES:
                problems.append(f"{name}: unknown secret (allowed: {', '.join(SECRET_NAMES)})")
            elif not generatable(self.resolved, name):
                problems.append(
                    f"{name}: issued outside the platform; set the new value with: {self.command_for(name)}"
                )
            elif name not in needs:
                problems.append(f"{name}: stack {self.stack} gives it to no service")
        if problems:
            raise SecretsError("\n".join(problems))
        for name in names:
            self.set(name, new_value(name))
        return names

    def command_for(self, name: str) -> str:
        """How a person sets this secret's value for this stack."""
        words = ["pulumi", "config", "set", "--secret", "--path", f"{SECRETS_KEY}.{name}", "--stack", self.stack]
        return " ".join([*words, *self.config_args(), "<value>"])


def missing_lines(needs: list[SecretNeed], store: StackSecrets) -> list[str]:
    return [f"  {need.name} (for {', '.join(need.uses)}): {store.command_for(need.name)}" for need in needs]
