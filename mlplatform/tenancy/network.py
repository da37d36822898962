"""Team network isolation, in both directions.

A team namespace denies all ingress and egress, then allows: its own pods, the platform's
namespaces in (ingress controllers, monitoring, the ML services' controllers), DNS out, and
the CIDRs the stack names for the Kubernetes API and anything outside. Each ML module adds
the egress to the services it offers teams (MLflow, the KFP API, Katib's metrics store)
with `allow_egress_to`, and guards its own back ends (databases, object stores) on their
side. Cloud metadata addresses are cut out of every address range a team may reach.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from mlplatform.config.model import TeamEgress
from mlplatform.environments import DnsPeer

NAME_LABEL = "kubernetes.io/metadata.name"
ROLE_LABEL = "mlplatform.io/role"
TEAM_ROLE = "team"

# Instance metadata services: AWS (IPv4, IPv6), GCP, Azure and OpenStack share the first;
# Alibaba Cloud uses its own. They hand out node credentials, so no team range includes them.
METADATA_ADDRESSES = ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")
# What "public" leaves out: private (RFC 1918), shared (RFC 6598, Alibaba's metadata among
# them) and link-local (every cloud's metadata service) IPv4 ranges.
NON_PUBLIC_IPV4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")


def metadata_overlap(cidr: str) -> str | None:
    """The metadata address a CIDR is (or lies inside), where it cannot be cut out of it."""
    network = ipaddress.ip_network(cidr)
    for address in METADATA_ADDRESSES:
        metadata = ipaddress.ip_network(address)
        if metadata.version == network.version and network.subnet_of(metadata):
            return address
    return None


def ip_block(cidr: str) -> dict[str, Any]:
    """An ipBlock peer for the range, minus the metadata addresses inside it."""
    network = ipaddress.ip_network(cidr)
    cut = [
        address
        for address in METADATA_ADDRESSES
        if ipaddress.ip_network(address).version == network.version
        and ipaddress.ip_network(address).subnet_of(network)
        and ipaddress.ip_network(address) != network
    ]
    return {"ipBlock": {"cidr": cidr, **({"except": cut} if cut else {})}}


def namespace_peer(namespace: str, pod_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Pods of one namespace (by its immutable name label), all or those with these labels."""
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAME_LABEL: namespace}}}
    peer["podSelector"] = {"matchLabels": dict(pod_labels)} if pod_labels else {}
    return peer


def role_peer(roles: Iterable[str]) -> dict[str, Any]:
    """Pods of every namespace the platform gave one of these roles."""
    return {"namespaceSelector": {"matchExpressions": [{"key": ROLE_LABEL, "operator": "In", "values": list(roles)}]}}


def ports(numbers: Iterable[int], protocols: Iterable[str] = ("TCP",)) -> list[dict[str, Any]]:
    return [{"port": number, "protocol": protocol} for number in numbers for protocol in protocols]


def _policy(name: str, namespace: str, labels: Mapping[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


def team_policies(
    namespace: str,
    labels: Mapping[str, str],
    *,
    platform_roles: Iterable[str],
    outside_namespaces: Iterable[str],
    dns: DnsPeer,
    egress: TeamEgress,
) -> list[dict[str, Any]]:
    """The team namespace's own policies (the modules add their egress with allow_egress_to)."""
    platform_peers = [role_peer(platform_roles)]
    outside = list(outside_namespaces)
    if outside:
        platform_peers.append(
            {"namespaceSelector": {"matchExpressions": [{"key": NAME_LABEL, "operator": "In", "values": outside}]}}
        )
    policies = [
        # Isolated both ways: what is not allowed below (or by a module) does not flow.
        _policy("default-deny", namespace, labels, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy(
            "allow-same-namespace",
            namespace,
            labels,
            {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        ),
        _policy(
            "allow-from-platform",
            namespace,
            labels,
            {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": platform_peers}]},
        ),
        _policy(
            "allow-dns",
            namespace,
            labels,
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [namespace_peer(dns.namespace, dns.pod_labels)], "ports": ports(dns.ports, ("UDP", "TCP"))}
                ],
            },
        ),
    ]
    if egress.kube_api_cidrs:
        policies.append(
            _policy(
                "allow-kube-api",
                namespace,
                labels,
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [ip_block(c) for c in egress.kube_api_cidrs], "ports": ports(egress.kube_api_ports)}
                    ],
                },
            )
        )
    if egress.allowed_cidrs:
        policies.append(
            _policy(
                "allow-egress-cidrs",
                namespace,
                labels,
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [ip_block(c) for c in egress.allowed_cidrs]}],
                },
            )
        )
    if egress.public_https:
        policies.append(
            _policy(
                "allow-public-https",
                namespace,
                labels,
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NON_PUBLIC_IPV4)}}],
                            "ports": ports([443]),
                        }
                    ],
                },
            )
        )
    return policies


# One egress rule: the peers, and the TCP ports on them.
EgressRule = tuple[list[dict[str, Any]], Iterable[int]]


def allow_egress_to(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    rules: Iterable[EgressRule],
) -> dict[str, Any]:
    """A team namespace's egress to one platform service (a module's own policy in it)."""
    return _policy(
        name,
        namespace,
        labels,
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": peers, "ports": ports(port_numbers)} for peers, port_numbers in rules],
        },
    )


def guard(
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    pod_labels: Mapping[str, str],
    peers: list[dict[str, Any]],
    port_numbers: Iterable[int] = (),
) -> dict[str, Any]:
    """Ingress to a platform back end (a database, an object store, an API) from these peers
    only, on its ports (every port where none are named): the pods it selects refuse every
    other source."""
    rule: dict[str, Any] = {"from": peers}
    if port_numbers:
        rule["ports"] = ports(port_numbers)
    return _policy(
        name,
        namespace,
        labels,
        {"podSelector": {"matchLabels": dict(pod_labels)}, "policyTypes": ["Ingress"], "ingress": [rule]},
    )
