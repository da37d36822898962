"""Sign-in at the gateway: every environment signs users in through oauth2-proxy at the mesh's
gateway, with its provider's issuer; nothing of upstream's well-known credentials survives;
the lab's static user's hash verifies its secret and is stable. Upstream's defaults are read
from the mirror, expected issuers from the stacks."""

from __future__ import annotations

import json
import re
import tomllib

import bcrypt
import pytest
import yaml

from mlplatform.modules.registry import required_secrets
from mlplatform.render import render_manifests
from mlplatform.stack_secrets import secret_needs
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT, STACKS, render_shared

OAUTH2_PROXY = "kubeflow-manifests/common/oauth2-proxy"
DEX = "kubeflow-manifests/common/dex"


@pytest.fixture(autouse=True)
def _mirror(mirror, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))


def _find(manifests, kind, name=None, namespace=None):
    return [
        m
        for m in manifests
        if m["kind"] == kind
        and (name is None or re.fullmatch(name, m["metadata"]["name"]))
        and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]


def _one(manifests, kind, name=None, namespace=None):
    found = _find(manifests, kind, name, namespace)
    assert len(found) == 1, (kind, name, namespace, len(found))
    return found[0]


def _provider(stack):
    return load_stack(stack).config.modules.identity


def _expected_issuer(stack, manifests):
    settings = _provider(stack)
    if settings.provider == "oidc":
        return settings.oidc.issuer_url
    # Dex's own issuer, as its config in the render says.
    return yaml.safe_load(_one(manifests, "ConfigMap", "dex", "auth")["data"]["config.yaml"])["issuer"]


def _proxy_config(manifests):
    config_map = _one(manifests, "ConfigMap", r"oauth2-proxy-[a-z0-9]{10}", "oauth2-proxy")
    return tomllib.loads(config_map["data"]["oauth2_proxy.cfg"])


def _gateway_pods(manifests):
    service = _one(manifests, "Service", "istio-ingressgateway", "istio-system")
    return service, _one(manifests, "Deployment", "istio-ingressgateway", "istio-system")


def test_profiles_pick_the_provider():
    assert [_provider(s).provider for s in STACKS] == ["dex", "openshift", "oidc"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_environment_signs_in_at_the_gateway(stack):
    manifests = render_shared(stack)
    provider = _provider(stack).provider
    _one(manifests, "Deployment", "oauth2-proxy", "oauth2-proxy")
    assert bool(_find(manifests, "Deployment", "dex", "auth")) == (provider != "oidc")
    _, gateway = _gateway_pods(manifests)
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    mesh = yaml.safe_load(_one(manifests, "ConfigMap", "istio", "istio-system")["data"]["mesh"])
    declared = {p["name"]: p["envoyExtAuthzHttp"] for p in mesh["extensionProviders"] if "envoyExtAuthzHttp" in p}
    custom = [p for p in _find(manifests, "AuthorizationPolicy") if p["spec"].get("action") == "CUSTOM"]
    assert len(custom) == 1
    policy = custom[0]["spec"]
    # It selects the gateway's pods of this render, and names the authorizer the mesh declares ...
    selector = policy["selector"]["matchLabels"]
    assert selector and all(pod_labels.get(k) == v for k, v in selector.items())
    assert policy["provider"]["name"] in declared
    # ... which is the oauth2-proxy Service of the render.
    service = declared[policy["provider"]["name"]]["service"]
    name, namespace = service.split(".")[:2]
    proxy_service = _one(manifests, "Service", name, namespace)
    assert declared[policy["provider"]["name"]]["port"] in [p["port"] for p in proxy_service["spec"]["ports"]]
    # A request without a token of the issuer is refused, the sign-in paths aside.
    deny = [
        p["spec"]
        for p in _find(manifests, "AuthorizationPolicy", namespace="istio-system")
        if p["spec"].get("action") == "DENY"
    ]
    assert any(
        rule["from"] == [{"source": {"notRequestPrincipals": ["*"]}}] and rule["to"] == policy["rules"][0]["to"]
        for spec in deny
        for rule in spec["rules"]
    )


@pytest.mark.parametrize("stack", STACKS)
def test_the_proxy_and_the_gateway_trust_the_providers_issuer(stack):
    manifests = render_shared(stack)
    issuer = _expected_issuer(stack, manifests)
    assert _proxy_config(manifests)["oidc_issuer_url"] == issuer
    _, gateway = _gateway_pods(manifests)
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    [authentication] = _find(manifests, "RequestAuthentication", namespace="istio-system")
    spec = authentication["spec"]
    assert all(pod_labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    [rule] = spec["jwtRules"]
    assert rule["issuer"] == issuer
    headers = {h["header"]: h["claim"] for h in rule["outputClaimToHeaders"]}
    settings = _provider(stack)
    groups = settings.oidc.groups_claim if settings.provider == "oidc" else "groups"
    # What Kubeflow's apps read: the user's email (no prefix) and groups.
    assert headers == {"kubeflow-userid": "email", "kubeflow-groups": groups}


def test_an_own_issuer_redirects_to_the_proxy_on_the_dashboard_host():
    """The cloud's client is registered with https://<host>/oauth2/callback (README): the proxy
    sends users back to its callback on the host they opened."""
    config = _proxy_config(render_shared("cloud"))
    assert config["redirect_url"] == "/oauth2/callback" and config["relative_redirect_url"] is True


def _upstream_defaults(mirror) -> set[str]:
    """Every credential upstream ships with: oauth2-proxy's client and cookie secrets, Dex's
    client secret and the static user's password hash."""
    kustomization = yaml.safe_load((mirror / OAUTH2_PROXY / "base" / "kustomization.yaml").read_text())
    literals = [
        literal
        for generator in kustomization["secretGenerator"]
        for literal in generator.get("literals", [])
        if literal.split("=", 1)[0] in ("client-secret", "cookie-secret")
    ]
    values = {literal.split("=", 1)[1] for literal in literals}
    params = (mirror / DEX / "base" / "secret_params.env").read_text()
    values |= {line.split("=", 1)[1] for line in params.splitlines() if line.startswith("OIDC_CLIENT_SECRET=")}
    passwords = yaml.safe_load((mirror / DEX / "base" / "dex-passwords.yaml").read_text())
    values |= set(passwords["stringData"].values())
    # The client secret (shared by the proxy and Dex), the cookie secret, the user's hash.
    assert len(values) == 3
    return values


@pytest.mark.security
@pytest.mark.parametrize("stack", STACKS)
def test_no_upstream_credential_survives(stack, mirror):
    rendered = json.dumps(render_shared(stack))
    for value in _upstream_defaults(mirror):
        assert value not in rendered, value


def _with_secrets(stack, secrets):
    raw = yaml.safe_load((REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw["mlplatform:secrets"] = secrets
    return raw


@pytest.mark.security
def test_dex_static_user_hash_verifies_its_secret_and_is_stable():
    secrets = {"identityTestUserPassword": "lab-user-pw-31c9", "identityClientSecret": "c", "identityCookieSecret": "k"}
    raw = _with_secrets("lab", secrets)
    first = render_shared("lab", raw)
    second = render_manifests("lab", raw)
    hashes = [_one(m, "Secret", "dex-passwords", "auth")["stringData"]["DEX_USER_PASSWORD"] for m in (first, second)]
    assert hashes[0] == hashes[1]
    assert bcrypt.checkpw(b"lab-user-pw-31c9", hashes[0].encode())
    assert not bcrypt.checkpw(b"another-password", hashes[0].encode())
    # The static user is the stack's, and its password is nowhere in clear.
    config = yaml.safe_load(_one(first, "ConfigMap", "dex", "auth")["data"]["config.yaml"])
    [user] = config["staticPasswords"]
    assert user["email"] == _provider("lab").test_user
    assert "lab-user-pw-31c9" not in json.dumps(first)
    # The proxy's client secret is the one Dex holds for it.
    proxy = _one(first, "Secret", r"oauth2-proxy-[a-z0-9]{10}", "oauth2-proxy")["stringData"]
    dex_client = _one(first, "Secret", "dex-oidc-client", "auth")["stringData"]
    assert proxy["client-secret"] == dex_client["OIDC_CLIENT_SECRET"] == "c"
    assert proxy["client-id"] == dex_client["OIDC_CLIENT_ID"]
    assert proxy["cookie-secret"] == "k"


def test_openshift_signs_in_through_a_service_account_client():
    manifests = render_shared("openshift")
    route = _one(manifests, "Route", "kubeflow", "istio-system")
    connector = next(
        c
        for c in yaml.safe_load(_one(manifests, "ConfigMap", "dex", "auth")["data"]["config.yaml"])["connectors"]
        if c["type"] == "openshift"
    )["config"]
    namespace, account = connector["clientID"].split(":")[2:]
    client = _one(manifests, "ServiceAccount", account, namespace)
    redirects = [
        v
        for k, v in client["metadata"]["annotations"].items()
        if k.startswith("serviceaccounts.openshift.io/oauth-redirecturi.")
    ]
    assert redirects == [connector["redirectURI"]] == [f"https://{route['spec']['host']}/dex/callback"]
    [token] = [
        s
        for s in _find(manifests, "Secret", namespace=namespace)
        if s.get("type") == "kubernetes.io/service-account-token"
        and s["metadata"]["annotations"]["kubernetes.io/service-account.name"] == account
    ]
    dex = _one(manifests, "Deployment", "dex", "auth")["spec"]["template"]["spec"]["containers"][0]
    secret_env = connector["clientSecret"].lstrip("$")
    [env] = [e for e in dex["env"] if e["name"] == secret_env]
    assert env["valueFrom"]["secretKeyRef"] == {"name": token["metadata"]["name"], "key": "token"}
    # Users come from the cluster: no static users, no password Secret.
    assert not _find(manifests, "Secret", "dex-passwords")
    # Only core objects: the plane serves no oauth.openshift.io API.
    assert not [m for m in manifests if m["apiVersion"].startswith("oauth.openshift.io")]


def test_each_provider_asks_for_its_own_secrets():
    needs = {stack: {n.name: n.generatable for n in secret_needs(load_stack(stack))} for stack in STACKS}
    identity = {
        stack: {name: generatable for name, generatable in needs[stack].items() if name.startswith("identity")}
        for stack in STACKS
    }
    assert identity["lab"] == {
        "identityClientSecret": True,
        "identityCookieSecret": True,
        "identityTestUserPassword": True,
    }
    assert identity["openshift"] == {"identityClientSecret": True, "identityCookieSecret": True}
    # An external issuer issues the client secret: nobody may generate it.
    assert identity["cloud"] == {"identityClientSecret": False, "identityCookieSecret": True}
    assert {name for name, _ in required_secrets(load_stack("cloud"))} >= {
        "identityClientSecret",
        "identityCookieSecret",
    }
