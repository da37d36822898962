"""`mlplatform secrets`: which credentials a stack needs, values generated for those nobody must
choose, stored with `pulumi config set --secret --path` (a fake CLI here, recording its calls)
in the per-checkout config of a local-plane stack or in the stack file of any other."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from mlplatform import stack_secrets
from mlplatform.cli import main as cli_main
from mlplatform.stack_secrets import SecretsError, StackSecrets
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT

# Emulates what these commands of the Pulumi CLI do to stack files: `stack init` writes the
# encryption salt into the stack file it finds from its working folder, `config set --secret`
# writes a secure value into --config-file or that file, reading the value from stdin.
FAKE_PULUMI = """#!{python}
import hashlib, json, os, sys
from pathlib import Path
import yaml

args = sys.argv[1:]
value = sys.stdin.read() if not sys.stdin.isatty() else ""
stacks = Path(os.environ["FAKE_PULUMI_STACKS"])
known = stacks.read_text().split() if stacks.exists() else []
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "cwd": os.getcwd(), "length": len(value)}}) + "\\n")

def option(name):
    return args[args.index(name) + 1] if name in args else None

def stack_file(stack):
    return Path(os.getcwd()) / "stacks" / f"Pulumi.{{stack}}.yaml"

if args[:2] == ["stack", "select"]:
    sys.exit(0 if args[2] in known else 1)
if args[:2] == ["stack", "init"]:
    stacks.write_text(" ".join([*known, args[2]]))
    path = stack_file(args[2])
    document = (yaml.safe_load(path.read_text()) if path.exists() else None) or {{}}
    document["encryptionsalt"] = "v1:fake-salt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    sys.exit(0)
if args[:2] == ["config", "set"]:
    path = Path(option("--config-file") or stack_file(option("--stack")))
    document = yaml.safe_load(path.read_text()) or {{}}
    name = args[args.index("--path") + 1].split(".", 1)[1]
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    document.setdefault("config", {{}}).setdefault("mlplatform:secrets", {{}})[name] = {{"secure": f"v1:{{digest}}"}}
    document.setdefault("encryptionsalt", "v1:fake-salt")
    path.write_text(yaml.safe_dump(document))
    sys.exit(0)
sys.exit(2)
"""


@pytest.fixture
def fake_pulumi(tmp_path):
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    script = folder / "pulumi"
    script.write_text(FAKE_PULUMI.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "pulumi-calls.jsonl"
    env = {
        "PATH": f"{folder}:/usr/bin:/bin",
        "FAKE_PULUMI_LOG": str(log),
        "FAKE_PULUMI_STACKS": str(tmp_path / "stacks-in-backend"),
    }

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return env, calls


def _project(tmp_path: Path, stack: str, **cluster) -> Path:
    """A scratch copy of the project with one stack file, `cluster` keys merged in."""
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "Pulumi.yaml", project)
    document = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    document["config"]["mlplatform:cluster"].update(cluster)
    (project / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return project


def _store(tmp_path: Path, stack: str, env: dict, **cluster) -> StackSecrets:
    project = _project(tmp_path, stack, **cluster)
    resolved = load_stack(str(project / "stacks" / f"Pulumi.{stack}.yaml"))
    return StackSecrets(stack, resolved, env, project=project, local_dir=tmp_path / "state" / "stacks")


@pytest.mark.security
def test_a_local_plane_stack_keeps_generated_secrets_out_of_the_working_tree(tmp_path, fake_pulumi):
    env, calls = fake_pulumi
    store = _store(tmp_path, "lab", env)
    committed = store.stack_file.read_bytes()
    assert store.per_checkout and store.config_file() == store.local_file
    assert [n.name for n in store.missing()] == [
        "databasePassword",
        "kubeflowDatabasePassword",
        "objectStoreAccessKey",
        "objectStoreSecretKey",
        "mlflowAdminPassword",
        # Dex's client at the gateway's sign-in proxy, its cookies, the lab's static user.
        "identityClientSecret",
        "identityCookieSecret",
        "identityTestUserPassword",
    ]

    store.ensure_stack()
    # Created from a scratch copy: the salt `stack init` writes lands outside the project.
    init = next(c for c in calls() if c["args"][:2] == ["stack", "init"])
    assert Path(init["cwd"]) != store.project
    local = yaml.safe_load(store.local_file.read_text())
    assert local["encryptionsalt"] == "v1:fake-salt"
    assert local["config"] == yaml.safe_load(committed)["config"]

    generated, missing = store.generate()
    assert generated == [n for n in stack_secrets.SECRET_NAMES if n in generated] and len(generated) == 8
    assert missing == []
    sets = [c for c in calls() if c["args"][:2] == ["config", "set"]]
    for call in sets:
        assert call["args"][-2:] == ["--config-file", str(store.local_file)]
        # token_urlsafe(32) (a cookie secret: token_urlsafe(24)), on stdin only
        cookie = any(a.endswith(".identityCookieSecret") for a in call["args"])
        assert "--secret" in call["args"] and call["length"] == (32 if cookie else 43)
    assert store.stack_file.read_bytes() == committed
    assert store.stored() == set(generated)
    # The committed config changes; the next sync keeps the generated values.
    secure = yaml.safe_load(store.local_file.read_text())["config"]["mlplatform:secrets"]
    store.sync()
    assert yaml.safe_load(store.local_file.read_text())["config"]["mlplatform:secrets"] == secure

    assert store.generate() == ([], [])
    store.rotate(["mlflowAdminPassword"])
    rotated = yaml.safe_load(store.local_file.read_text())["config"]["mlplatform:secrets"]
    assert rotated["mlflowAdminPassword"] != secure["mlflowAdminPassword"]
    assert {k: v for k, v in rotated.items() if k != "mlflowAdminPassword"} == {
        k: v for k, v in secure.items() if k != "mlflowAdminPassword"
    }
    assert store.config_args() == ["--config-file", str(store.local_file)]


@pytest.mark.security
def test_a_stack_on_its_own_cluster_keeps_its_secrets_in_its_stack_file(tmp_path, fake_pulumi):
    env, calls = fake_pulumi
    store = _store(tmp_path, "openshift", env, kubeconfig="/etc/ocp/kubeconfig")
    assert not store.per_checkout and store.config_args() == []
    store.ensure_stack()
    generated, _ = store.generate()
    written = yaml.safe_load(store.stack_file.read_text())
    assert written["encryptionsalt"] == "v1:fake-salt"
    assert set(written["config"]["mlplatform:secrets"]) == set(generated)
    assert not store.local_file.exists()
    assert all("--config-file" not in c["args"] for c in calls())


@pytest.mark.security
def test_what_nobody_can_generate_is_reported_with_how_to_set_it(tmp_path, fake_pulumi):
    env, _ = fake_pulumi
    store = _store(tmp_path, "cloud", env)
    store.ensure_stack()
    generated, missing = store.generate()
    assert generated == ["mlflowAdminPassword", "identityCookieSecret"]
    # The cloud's OIDC issuer issues the sign-in proxy's client secret.
    assert [n.name for n in missing] == [
        "databasePassword",
        "kubeflowDatabasePassword",
        "objectStoreAccessKey",
        "objectStoreSecretKey",
        "identityClientSecret",
    ]
    (line,) = [line for line in stack_secrets.missing_lines(missing, store) if "kubeflowDatabasePassword" in line]
    assert "Kubeflow Pipelines' managed MySQL" in line
    assert "pulumi config set --secret --path mlplatform:secrets.kubeflowDatabasePassword --stack cloud" in line
    with pytest.raises(SecretsError, match="databasePassword: issued outside the platform"):
        store.rotate(["databasePassword"])
    with pytest.raises(SecretsError, match="apiToken: unknown secret"):
        store.rotate(["apiToken"])


@pytest.mark.parametrize("name", ["mlflowOidcCookieSecret", "identityCookieSecret"])
def test_the_oidc_cookie_secret_is_32_bytes(name):
    values = {stack_secrets.new_value(name) for _ in range(5)}
    assert len(values) == 5 and {len(v.encode()) for v in values} == {32}


@pytest.mark.security
def test_secrets_list_names_each_secret_and_shows_no_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stack_secrets, "STATE_ROOT", tmp_path)
    assert cli_main(["secrets", "list", "--stack", "lab"]) == 1
    out = capsys.readouterr().out
    assert f"secrets in {tmp_path}/stacks/Pulumi.lab.yaml" in out
    assert "mlflowAdminPassword        missing  generatable       for MLflow's Secret mlflow-admin" in out
    (tmp_path / "stacks").mkdir()
    secure = {name: {"secure": "v1:c2VjcmV0"} for name in stack_secrets.SECRET_NAMES}
    (tmp_path / "stacks" / "Pulumi.lab.yaml").write_text(yaml.safe_dump({"config": {"mlplatform:secrets": secure}}))
    assert cli_main(["secrets", "--stack", "lab", "list"]) == 0
    out = capsys.readouterr().out
    assert "missing" not in out and "c2VjcmV0" not in out
