"""The rules a stack's names, keys and numbers must follow: each stated once, here.

Each rule is the one Kubernetes (or the tool behind a setting) applies when the value reaches
it, so a stack that validates is not refused later by the API server. A problem message names
the rule it breaks: `'Team-A' breaks dns-1123-label (allowed: ...)`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

# Longest value quoted back in a message: a message about a huge value stays one short line.
SHOWN_CHARACTERS = 80


def shown(value: object) -> str:
    """repr() of a value, cut to a bounded length."""
    text = repr(value)
    if len(text) > SHOWN_CHARACTERS:
        text = text[: SHOWN_CHARACTERS - 5] + f"...({len(text)} characters)"
    return text


@dataclass(frozen=True)
class Rule:
    name: str
    # What is allowed, as the message says it.
    allowed: str
    check: Callable[[str], bool]

    def problem(self, value: object) -> str | None:
        """None where the value follows the rule, else the message."""
        if isinstance(value, str) and self.check(value):
            return None
        return f"{shown(value)} breaks {self.name} (allowed: {self.allowed})"

    def validator(self, value: str) -> str:
        """For pydantic's AfterValidator: a broken rule is a ValueError carrying the message."""
        message = self.problem(value)
        if message is not None:
            raise ValueError(message)
        return value


# re.fullmatch throughout: `$` would also match before a trailing newline.
_LABEL_RE = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_PART_RE = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"


def _dns_label(value: str) -> bool:
    return len(value) <= 63 and re.fullmatch(_LABEL_RE, value) is not None


def _dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and re.fullmatch(rf"{_LABEL_RE}(\.{_LABEL_RE})*", value) is not None


def _qualified_name(value: str) -> bool:
    prefix, slash, name = value.rpartition("/")
    if slash and not (prefix and _dns_subdomain(prefix)):
        return False
    return len(name) <= 63 and re.fullmatch(_NAME_PART_RE, name) is not None


def _label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and re.fullmatch(_NAME_PART_RE, value) is not None)


def _namespace_prefix(value: str) -> bool:
    # Put before a DNS label: what is left of a label once its last character is taken off.
    return value == "" or (len(value) <= 32 and re.fullmatch(r"[a-z0-9][-a-z0-9]*", value) is not None)


def _trimmed(value: str) -> bool:
    return value == value.strip() and "\n" not in value and "\r" not in value


DNS_LABEL = Rule(
    "dns-1123-label",
    "lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
    _dns_label,
)
DNS_SUBDOMAIN = Rule(
    "dns-1123-subdomain",
    "dot-separated DNS-1123 labels (lower-case letters, digits, '-'), at most 253 characters",
    _dns_subdomain,
)
# Label keys, annotation keys, taint keys and extended resource names share this form.
QUALIFIED_NAME = Rule(
    "qualified-name",
    "[prefix/]name: an optional DNS-1123 subdomain prefix, then a name of at most 63 letters, digits, "
    "'-', '_', '.', starting and ending with a letter or digit",
    _qualified_name,
)
LABEL_VALUE = Rule(
    "label-value",
    "empty, or at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit",
    _label_value,
)
NAMESPACE_PREFIX = Rule(
    "namespace-prefix",
    "empty, or at most 32 lower-case letters, digits and '-', starting with a letter or digit "
    "(prefix + team name must be a DNS-1123 label)",
    _namespace_prefix,
)
STACK_NAME = Rule(
    "stack-name",
    "at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit "
    "(a Pulumi stack name that is also a label value: objects carry mlplatform.io/stack)",
    lambda value: len(value) <= 63 and re.fullmatch(_NAME_PART_RE, value) is not None,
)
TRIMMED = Rule(
    "trimmed",
    "no whitespace at either end and no line breaks",
    _trimmed,
)
# Annotation values may be any text; Kubernetes caps all of an object's annotations at 256 KiB.
ANNOTATION_VALUE_MAX = 64 * 1024
ANNOTATION_VALUE = Rule(
    "annotation-value",
    f"text of at most {ANNOTATION_VALUE_MAX} characters",
    lambda value: len(value) <= ANNOTATION_VALUE_MAX,
)

# Namespaces nobody's workloads go into: Kubernetes' and OpenShift's own.
RESERVED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
RESERVED_NAMESPACE_PREFIXES = ("kube-", "openshift")


def reserved_namespace(name: str) -> bool:
    return name in RESERVED_NAMESPACES or name.startswith(RESERVED_NAMESPACE_PREFIXES)


# Counts. Each bound is the largest a real cluster reaches, well inside what the objects hold.
MAX_NODES_PER_POOL = 5000  # Kubernetes' largest supported cluster
MAX_PODS_PER_TEAM = 150_000  # Kubernetes' largest supported cluster
MAX_CLAIMS_PER_TEAM = 100_000
MAX_GPUS_PER_TEAM = 100_000
MAX_TEAMS = 1000
# Team stacks one platform stack lists: each a stack to preview and apply on its own.
MAX_TEAM_STACKS = 100
MAX_NODE_POOLS = 500
MAX_LIST_ITEMS = 1000
MAX_MIG_INSTANCES = 7  # the most MIG devices one GPU splits into

# Quantities: a Kubernetes Quantity holds a signed 64-bit count of its smallest unit; larger
# values are silently capped by the API server. Exponents are bounded before anything is computed.
MAX_QUANTITY = Decimal(2**63 - 1)
MAX_QUANTITY_EXPONENT = 30
QUANTITY_RULE = "kubernetes-quantity"
QUANTITY_ALLOWED = "a quantity such as 500m, 4, 64Gi or 1e3, at most 9223372036854775807 (2^63-1)"
