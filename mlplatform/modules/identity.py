"""Sign-in at the mesh's gateway: oauth2-proxy (pinned upstream) as the gateway's external
authorizer, and the identity provider behind it, by `modules.identity.provider`:

- dex: Dex in the cluster with one static user (a lab without a directory);
- openshift: Dex with its `openshift` connector, in front of the cluster's OAuth server, whose
  client is a ServiceAccount (core objects only: no oauth.openshift.io object is created);
- oidc: the stack's own issuer, straight from oauth2-proxy, no Dex.

Whatever the provider, the gateway admits a request only with a token of that issuer (its
RequestAuthentication), which oauth2-proxy puts on every browser request it lets through, and
unpacks the token's claims into the headers Kubeflow's apps read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import tomllib
from typing import Any

import bcrypt
import pulumi
import yaml

from mlplatform.config import ResolvedConfig
from mlplatform.modules.base import Module, ModuleContext, create_object, gateway_host
from mlplatform.modules.contracts import IdentityOutputs, MeshOutputs
from mlplatform.modules.services import ServiceInstall, find, overlay_manifests, secret_marker, secret_value

# What Kubeflow's apps read (their USERID_HEADER / USERID_PREFIX defaults, and the groups header).
USER_HEADER = "kubeflow-userid"
USER_PREFIX = ""
GROUPS_HEADER = "kubeflow-groups"
# Dex as upstream runs it: its in-cluster issuer (oauth2-proxy redeems codes there, the gateway
# fetches its keys there; browsers reach it under /dex/ on the gateway).
DEX_NAMESPACE = "auth"
DEX_ISSUER = f"http://dex.{DEX_NAMESPACE}.svc.cluster.local:5556/dex"
# oauth2-proxy's client id at Dex (upstream's; Dex is ours, so the name is only a label).
DEX_CLIENT_ID = "kubeflow-oidc-authservice"
OAUTH2_PROXY_NAMESPACE = "oauth2-proxy"
# The OpenShift OAuth client: a ServiceAccount whose token is the client secret.
OPENSHIFT_CLIENT_SA = "dex-oauth-client"
OPENSHIFT_CLIENT_TOKEN = "dex-oauth-client-token"
# bcrypt cost of the static user's hash (Dex accepts 10 and above).
BCRYPT_COST = 10
# Pod-template annotation digesting oauth2-proxy's config: a changed config rolls its pods.
CONFIG_CHECKSUM_ANNOTATION = "mlplatform.io/config-checksum"


def issuer_url(resolved: ResolvedConfig) -> str:
    settings = resolved.config.modules.identity
    if settings.provider == "oidc":
        assert settings.oidc is not None  # validation: provider oidc requires the block
        return settings.oidc.issuer_url
    return DEX_ISSUER


def groups_claim(resolved: ResolvedConfig) -> str:
    settings = resolved.config.modules.identity
    return settings.oidc.groups_claim if settings.provider == "oidc" and settings.oidc else "groups"


def bcrypt_salt(password: str, stack: str) -> bytes:
    """A bcrypt salt derived from the password (HMAC keyed by the stack): the same password gives
    the same hash on every run, so a no-op `up` changes nothing, and another stack's differs."""
    digest = hmac.new(f"mlplatform:dex-static-user:{stack}".encode(), password.encode(), hashlib.sha256).digest()
    # bcrypt's base64 is the standard one over another alphabet; 16 bytes are 22 characters.
    standard = base64.b64encode(digest[:16]).decode().rstrip("=")
    alphabet = str.maketrans(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    )
    return f"$2b${BCRYPT_COST:02d}${standard.translate(alphabet)}".encode()


def password_hash(password: str, stack: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt_salt(password, stack)).decode()


def bcrypt_marker(name: str) -> str:
    """What the hash reads as where the secret is not decrypted (render): the export turns it
    into a template that hashes the stored secret."""
    return f"<mlplatform:bcrypt({secret_marker(name)})>"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def to_toml(settings: dict[str, Any]) -> str:
    """oauth2-proxy's flat config file (strings, booleans, numbers and lists of them only)."""
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in settings.items())


def oauth2_proxy_config(upstream: str, resolved: ResolvedConfig) -> dict[str, Any]:
    """Upstream's config with the stack's issuer: Dex's as upstream writes it, or the stack's
    OIDC issuer found by discovery (no Dex paths to skip or redirect to)."""
    config = tomllib.loads(upstream)
    settings = resolved.config.modules.identity
    if settings.provider == "oidc":
        assert settings.oidc is not None
        for key in ("skip_oidc_discovery", "login_url", "redeem_url", "oidc_jwks_url"):
            config.pop(key, None)
        config["oidc_issuer_url"] = settings.oidc.issuer_url
        config["skip_auth_routes"] = [r for r in config.get("skip_auth_routes", []) if "/dex/" not in r]
        config["scope"] = "openid email profile"
        config["oidc_groups_claim"] = settings.oidc.groups_claim
        config["provider_display_name"] = "Sign in"
        if settings.oidc.allowed_groups:
            config["allowed_groups"] = list(settings.oidc.allowed_groups)
    else:
        config["oidc_issuer_url"] = DEX_ISSUER
        if settings.provider == "openshift":
            config["provider_display_name"] = "OpenShift"
    return config


def dex_config(upstream: str, resolved: ResolvedConfig) -> dict[str, Any]:
    """Upstream's Dex config with the stack's user or connector; secrets stay in env vars."""
    config = yaml.safe_load(upstream)
    settings = resolved.config.modules.identity
    config["issuer"] = DEX_ISSUER
    config["logger"] = {**(config.get("logger") or {}), "level": "info"}
    if settings.provider == "dex":
        email = settings.test_user
        config["enablePasswordDB"] = True
        config["staticPasswords"] = [
            {
                "email": email,
                "hashFromEnv": "DEX_USER_PASSWORD",
                "username": email.split("@")[0],
                # Dex's subject for the user: stable per email.
                "userID": hashlib.sha256(email.encode()).hexdigest()[:16],
            }
        ]
    else:
        config["enablePasswordDB"] = False
        config.pop("staticPasswords", None)
        config["connectors"] = [
            {
                "type": "openshift",
                "id": "openshift",
                "name": "OpenShift",
                "config": {
                    # The API server names the OAuth server (/.well-known/oauth-authorization-server).
                    "issuer": "https://kubernetes.default.svc",
                    "clientID": f"system:serviceaccount:{DEX_NAMESPACE}:{OPENSHIFT_CLIENT_SA}",
                    "clientSecret": "$OPENSHIFT_OAUTH_CLIENT_SECRET",
                    "redirectURI": f"https://{gateway_host(resolved)}/dex/callback",
                    "rootCA": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                },
            }
        ]
    return config


def _named(manifests: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    """An object kustomize generated (its name carries a content hash after the prefix)."""
    name = re.compile(rf"{re.escape(prefix)}-[a-z0-9]{{10}}")
    found = [m for m in manifests if m["kind"] == kind and name.fullmatch(m["metadata"]["name"])]
    if len(found) != 1:
        raise KeyError(f"{kind} {prefix}-<hash> is not in the upstream build")
    return found[0]


class Identity(Module):
    """oauth2-proxy at the gateway and the stack's identity provider behind it."""

    provides = IdentityOutputs
    needs = (MeshOutputs,)

    @staticmethod
    def required_secrets(resolved: Any) -> list[tuple[str, str]]:
        provider = resolved.config.modules.identity.provider
        needed = [
            ("identityCookieSecret", "the sign-in proxy's session cookies"),
            (
                "identityClientSecret",
                "the sign-in proxy's client at the OIDC issuer"
                if provider == "oidc"
                else "the sign-in proxy's client at Dex",
            ),
        ]
        if provider == "dex":
            needed.append(("identityTestUserPassword", "the lab's static Dex user"))
        return needed

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:identity:Identity", name, None, opts)
        resolved = ctx.resolved
        settings = resolved.config.modules.identity
        mesh = ctx.require(MeshOutputs)
        labels = {**ctx.labels, "mlplatform.io/module": "identity"}
        after_mesh = list(mesh.ready)
        ready: list[pulumi.Resource] = []
        client_id = settings.oidc.client_id if settings.provider == "oidc" and settings.oidc else DEX_CLIENT_ID
        client_secret = secret_value(ctx, "identityClientSecret")
        if settings.provider != "oidc":
            dex = ServiceInstall(
                self,
                ctx,
                self._dex(ctx, client_secret),
                module_label="identity",
                after_for_custom_resources=after_mesh,
                credentials=self._dex_credentials,
            )
            ready += dex.ready
        proxy = ServiceInstall(
            self,
            ctx,
            self._oauth2_proxy(ctx, client_id, client_secret),
            module_label="identity",
            after_for_custom_resources=after_mesh,
            credentials=self._proxy_credentials,
            crd_release="identity-oauth2-proxy",
        )
        ready += proxy.ready
        for manifest in gateway_policies(resolved, mesh, labels):
            ready.append(create_object(manifest, ctx.child_opts(self, depends_on=[*after_mesh, *proxy.ready])))
        self.outputs = IdentityOutputs(
            user_header=USER_HEADER,
            user_prefix=USER_PREFIX,
            groups_header=GROUPS_HEADER,
            issuer_url=issuer_url(resolved),
            sign_in_url=f"https://{gateway_host(resolved)}/",
            test_user=settings.test_user if settings.provider == "dex" else None,
            ready=tuple(ready),
        )
        self.register_outputs({"signInUrl": self.outputs.sign_in_url, "issuerUrl": self.outputs.issuer_url})

    def _oauth2_proxy(self, ctx: ModuleContext, client_id: str, client_secret: Any) -> list[dict[str, Any]]:
        manifests = overlay_manifests(ctx, "oauth2-proxy")
        config_map = _named(manifests, "ConfigMap", "oauth2-proxy")
        text = to_toml(oauth2_proxy_config(config_map["data"]["oauth2_proxy.cfg"], ctx.resolved))
        config_map["data"]["oauth2_proxy.cfg"] = text
        parameters = _named(manifests, "ConfigMap", "oauth2-proxy-parameters")["data"]
        # Users reach the gateway over HTTPS only (Ingress or Route): cookies are Secure.
        parameters["FORCE_HTTPS"] = "true"
        # The issuer's certificate is checked (Dex's is plain HTTP inside the cluster).
        parameters["ALLOW_SELF_SIGNED_ISSUER"] = "false"
        deployment = find(manifests, "Deployment", "oauth2-proxy")
        template = deployment["spec"]["template"].setdefault("metadata", {})
        template["annotations"] = {
            **(template.get("annotations") or {}),
            CONFIG_CHECKSUM_ANNOTATION: hashlib.sha256(text.encode()).hexdigest(),
        }
        # Never upstream's client and cookie secrets: the stack's.
        secret = _named(manifests, "Secret", "oauth2-proxy")
        secret.pop("data", None)
        values = {
            "client-id": client_id,
            "client-secret": client_secret,
            "cookie-secret": secret_value(ctx, "identityCookieSecret"),
        }
        secret["stringData"] = values
        self._proxy_credentials = {(OAUTH2_PROXY_NAMESPACE, secret["metadata"]["name"]): values}
        return manifests

    def _dex(self, ctx: ModuleContext, client_secret: Any) -> list[dict[str, Any]]:
        resolved = ctx.resolved
        provider = resolved.config.modules.identity.provider
        manifests = overlay_manifests(ctx, "dex")
        config_map = find(manifests, "ConfigMap", "dex")
        config_map["data"]["config.yaml"] = yaml.safe_dump(
            dex_config(config_map["data"]["config.yaml"], resolved), sort_keys=False
        )
        client = find(manifests, "Secret", "dex-oidc-client")
        client.pop("data", None)
        client["stringData"] = {"OIDC_CLIENT_ID": DEX_CLIENT_ID, "OIDC_CLIENT_SECRET": client_secret}
        self._dex_credentials: dict[tuple[str, str], dict[str, Any]] = {
            (DEX_NAMESPACE, "dex-oidc-client"): client["stringData"]
        }
        deployment = find(manifests, "Deployment", "dex")
        dex = deployment["spec"]["template"]["spec"]["containers"][0]
        passwords = find(manifests, "Secret", "dex-passwords")
        if provider == "dex":
            passwords.pop("data", None)
            password = resolved.secrets.get("identityTestUserPassword")
            hashed = password_hash(password, resolved.stack) if password is not None else None
            values = {
                "DEX_USER_PASSWORD": pulumi.Output.secret(
                    hashed if hashed is not None else bcrypt_marker("identityTestUserPassword")
                )
            }
            passwords["stringData"] = values
            self._dex_credentials[(DEX_NAMESPACE, "dex-passwords")] = values
        else:
            # No static users: upstream's password Secret (and its well-known hash) goes.
            manifests.remove(passwords)
            dex["envFrom"] = [
                e for e in dex.get("envFrom", []) if e.get("secretRef", {}).get("name") != "dex-passwords"
            ]
            manifests += openshift_client(resolved)
            dex.setdefault("env", []).append(
                {
                    "name": "OPENSHIFT_OAUTH_CLIENT_SECRET",
                    "valueFrom": {"secretKeyRef": {"name": OPENSHIFT_CLIENT_TOKEN, "key": "token"}},
                }
            )
        return manifests


def openshift_client(resolved: ResolvedConfig) -> list[dict[str, Any]]:
    """The OAuth client Dex signs users in with: a ServiceAccount the OAuth server accepts as a
    client (its redirect URI annotated), and its long-lived token as the client secret."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": OPENSHIFT_CLIENT_SA,
                "namespace": DEX_NAMESPACE,
                "annotations": {
                    "serviceaccounts.openshift.io/oauth-redirecturi.dex": (
                        f"https://{gateway_host(resolved)}/dex/callback"
                    )
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": OPENSHIFT_CLIENT_TOKEN,
                "namespace": DEX_NAMESPACE,
                "annotations": {"kubernetes.io/service-account.name": OPENSHIFT_CLIENT_SA},
            },
        },
    ]


def gateway_policies(resolved: ResolvedConfig, mesh: MeshOutputs, labels: dict[str, str]) -> list[dict[str, Any]]:
    """What the gateway demands of a request: a token of the issuer (checked, unpacked into the
    user and groups headers), got from oauth2-proxy where the browser brings none; only the
    sign-in paths pass without one."""
    provider = resolved.config.modules.identity.provider
    open_paths = ["/oauth2/*"] if provider == "oidc" else ["/dex/*", "/dex/**", "/oauth2/*"]
    selector = {"matchLabels": dict(mesh.ingress_selector)}

    def meta(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": mesh.namespace, "labels": labels}

    return [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": meta("mlplatform-gateway-jwt"),
            "spec": {
                # The gateway only: tokens are checked once, where requests come in.
                "selector": selector,
                "jwtRules": [
                    {
                        "issuer": issuer_url(resolved),
                        "forwardOriginalToken": True,
                        "outputClaimToHeaders": [
                            {"header": USER_HEADER, "claim": "email"},
                            {"header": GROUPS_HEADER, "claim": groups_claim(resolved)},
                        ],
                        "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
                    }
                ],
            },
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": meta("mlplatform-gateway-sign-in"),
            "spec": {
                # Browser requests (no bearer token) go to oauth2-proxy, which signs the user in
                # or adds the session's token.
                "action": "CUSTOM",
                "provider": {"name": mesh.external_authorizer},
                "selector": selector,
                "rules": [
                    {
                        "when": [{"key": "request.headers[authorization]", "notValues": ["*"]}],
                        "to": [{"operation": {"notPaths": open_paths}}],
                    }
                ],
            },
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": meta("mlplatform-gateway-require-token"),
            "spec": {
                # Whatever reaches past the sign-in proxy carries a token the issuer signed.
                "action": "DENY",
                "selector": selector,
                "rules": [
                    {
                        "from": [{"source": {"notRequestPrincipals": ["*"]}}],
                        "to": [{"operation": {"notPaths": open_paths}}],
                    }
                ],
            },
        },
    ]
