"""Start, stop and inspect the local control plane.

Every process binds to 127.0.0.1 only; data, logs, certificates and the kubeconfig live
under .mlplatform/cluster/ (ignored by git). Processes run in their own sessions so that
they outlive the command that started them; `down` stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlplatform import progress
from mlplatform import simulated_target as simulated
from mlplatform.cluster import pki
from mlplatform.cluster.provider_nodes import SIMULATED_LABEL, simulated_nodes
from mlplatform.config import ResolvedConfig
from mlplatform.paths import SHARE_DIR, STATE_ROOT
from mlplatform.toolchain.build import bin_dir

SERVICE_CIDR = "10.96.0.0/16"
# Below Linux's ephemeral range (32768-60999 by default), so that no outbound connection
# of another program can hold a port the plane needs.
DEFAULT_PORT_BASE = 26000


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def from_env(cls) -> Ports:
        base = int(os.environ.get("MLPLATFORM_CLUSTER_PORT_BASE", str(DEFAULT_PORT_BASE)))
        return cls(base + 379, base + 380, base + 443, base + 257, base + 259, base + 247)


def cluster_dir() -> Path:
    return STATE_ROOT / "cluster"


def kubeconfig_path() -> Path:
    return cluster_dir() / "kubeconfig"


COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "simulated-controllers")


def _binary(name: str) -> str:
    path = bin_dir() / name
    if not path.exists():
        raise ClusterError(f"{name} not found in {bin_dir()}: run `mlplatform tools --only cluster` first")
    return str(path)


def _pid_file(component: str) -> Path:
    return cluster_dir() / "run" / f"{component}.pid"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def running_pid(component: str) -> int | None:
    pid_file = _pid_file(component)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    return pid if pid and process_alive(pid) else None


def port_taken(port: int) -> bool:
    """Whether a bind to 127.0.0.1:port fails, tried as the Go servers of the plane bind
    (SO_REUSEADDR, so that connections of an earlier run in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _start(component: str, args: list[str], command: list[str] | None = None, ports: tuple[int, ...] = ()) -> None:
    """Start a component in its own session, logging to logs/<component>.log; `command` replaces
    the binary of that name where the component is not one. A port in `ports` that another
    process holds fails here, by name, rather than as a readiness timeout later."""
    if running_pid(component):
        return
    for port in ports:
        if port_taken(port):
            raise ClusterError(
                f"{component} cannot start: 127.0.0.1:{port} is taken by another process. "
                "Stop that process, or move the plane's ports with MLPLATFORM_CLUSTER_PORT_BASE "
                f"(now {os.environ.get('MLPLATFORM_CLUSTER_PORT_BASE', DEFAULT_PORT_BASE)}; "
                f"the plane uses base+247 to base+443)."
            )
    logs = cluster_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _pid_file(component).parent.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{component}.log", "ab") as log:
        proc = subprocess.Popen(
            [*(command or [_binary(component)]), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _pid_file(component).write_text(str(proc.pid))


def _kubeconfig(path: Path, server: str, ca: pki.Pair, client: pki.Pair, user: str) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "mlplatform-local", "cluster": {"server": server, "certificate-authority": str(ca.cert)}}
        ],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}],
        "contexts": [{"name": "mlplatform-local", "context": {"cluster": "mlplatform-local", "user": user}}],
        "current-context": "mlplatform-local",
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)


@dataclass(frozen=True)
class Credentials:
    ca: pki.Pair
    apiserver: pki.Pair
    service_account: pki.Pair
    admin_kubeconfig: Path
    controller_manager_kubeconfig: Path
    scheduler_kubeconfig: Path


def _credentials(ports: Ports) -> Credentials:
    pki_dir = cluster_dir() / "pki"
    ca = pki.ensure_ca(pki_dir)
    apiserver = pki.ensure_leaf(
        pki_dir,
        "apiserver",
        ca,
        "kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", "10.96.0.1"),
        server=True,
    )
    service_account = pki.ensure_service_account_key(pki_dir)
    server = f"https://127.0.0.1:{ports.apiserver}"
    admin = pki.ensure_leaf(pki_dir, "admin", ca, "mlplatform-admin", organization="system:masters")
    cm = pki.ensure_leaf(pki_dir, "controller-manager", ca, "system:kube-controller-manager")
    scheduler = pki.ensure_leaf(pki_dir, "scheduler", ca, "system:kube-scheduler")
    creds = Credentials(
        ca=ca,
        apiserver=apiserver,
        service_account=service_account,
        admin_kubeconfig=kubeconfig_path(),
        controller_manager_kubeconfig=cluster_dir() / "controller-manager.kubeconfig",
        scheduler_kubeconfig=cluster_dir() / "scheduler.kubeconfig",
    )
    _kubeconfig(creds.admin_kubeconfig, server, ca, admin, "mlplatform-admin")
    _kubeconfig(creds.controller_manager_kubeconfig, server, ca, cm, "system:kube-controller-manager")
    _kubeconfig(creds.scheduler_kubeconfig, server, ca, scheduler, "system:kube-scheduler")
    return creds


def _ready(url: str, ca: Path, client: tuple[Path, Path] | None = None) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    if client:
        context.load_cert_chain(str(client[0]), str(client[1]))
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(what: str, check, timeout: float, log: str) -> None:
    progress.phase(f"start processes: wait for {what}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    tail = ""
    log_file = cluster_dir() / "logs" / f"{log}.log"
    if log_file.exists():
        tail = "\n  ".join(log_file.read_text(errors="replace").splitlines()[-20:])
    raise ClusterError(f"{what} not ready after {timeout:.0f}s; last lines of {log_file}:\n  {tail}")


def _etcd_healthy(ports: Ports) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.etcd_client}/health", timeout=2) as response:
            return json.loads(response.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def start_control_plane(ports: Ports | None = None) -> Credentials:
    ports = ports or Ports.from_env()
    creds = _credentials(ports)
    data = cluster_dir() / "etcd-data"
    _start(
        "etcd",
        [
            "--name=mlplatform",
            f"--data-dir={data}",
            f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-cluster=mlplatform=http://127.0.0.1:{ports.etcd_peer}",
            # A throwaway test store: skipping fsync makes it several times faster.
            "--unsafe-no-fsync=true",
            "--listen-metrics-urls=",
            "--log-level=warn",
        ],
        ports=(ports.etcd_client, ports.etcd_peer),
    )
    _wait("etcd", lambda: _etcd_healthy(ports), 60, "etcd")
    _start(
        "kube-apiserver",
        [
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={creds.apiserver.cert}",
            f"--tls-private-key-file={creds.apiserver.key}",
            f"--client-ca-file={creds.ca.cert}",
            "--authorization-mode=RBAC",
            # No kubelets register themselves, so the Node authorizer and NodeRestriction
            # admission have nothing to guard; every other default admission plugin
            # (ResourceQuota, LimitRanger, PodSecurity, webhooks ...) stays on.
            "--enable-admission-plugins=ResourceQuota,LimitRanger,PodSecurity,DefaultStorageClass",
            "--disable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={creds.service_account.cert}",
            f"--service-account-signing-key-file={creds.service_account.key}",
            "--allow-privileged=true",
            # The plane is reached on loopback only; no endpoints for the kubernetes Service.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ],
        ports=(ports.apiserver,),
    )
    _wait(
        "kube-apiserver",
        lambda: _ready(
            f"https://127.0.0.1:{ports.apiserver}/readyz",
            creds.ca.cert,
            (cluster_dir() / "pki" / "admin.crt", cluster_dir() / "pki" / "admin.key"),
        ),
        120,
        "kube-apiserver",
    )
    _start(
        "kube-controller-manager",
        [
            f"--kubeconfig={creds.controller_manager_kubeconfig}",
            f"--authentication-kubeconfig={creds.controller_manager_kubeconfig}",
            f"--authorization-kubeconfig={creds.controller_manager_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--service-account-private-key-file={creds.service_account.key}",
            f"--root-ca-file={creds.ca.cert}",
            f"--cluster-signing-cert-file={creds.ca.cert}",
            f"--cluster-signing-key-file={creds.ca.key}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        ports=(ports.controller_manager,),
    )
    _start(
        "kube-scheduler",
        [
            f"--kubeconfig={creds.scheduler_kubeconfig}",
            f"--authentication-kubeconfig={creds.scheduler_kubeconfig}",
            f"--authorization-kubeconfig={creds.scheduler_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        ports=(ports.scheduler,),
    )
    stages = sorted(SHARE_DIR.glob("kwok-*.yaml"))
    if not stages:
        raise ClusterError(f"kwok's stage files are missing from {SHARE_DIR}: run `mlplatform tools --only kwok`")
    _start(
        "kwok",
        [
            *(f"--config={stage}" for stage in stages),
            f"--kubeconfig={creds.admin_kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.244.0.1",
            f"--server-address=127.0.0.1:{ports.kwok}",
            "--node-lease-duration-seconds=40",
        ],
        ports=(ports.kwok,),
    )
    # Programs that target this plane adapt to it (mlplatform.simulated_target).
    simulated.mark(cluster_dir())
    # No cloud, CSI driver or ingress controller here: volumes and addresses are simulated.
    _start(
        "simulated-controllers",
        [f"--kubeconfig={creds.admin_kubeconfig}", f"--kubectl={_binary('kubectl')}"],
        command=[sys.executable, "-m", "mlplatform.cluster.simulated_controllers"],
    )
    for component, port in (("kube-controller-manager", ports.controller_manager), ("kube-scheduler", ports.scheduler)):
        _wait(component, lambda port=port: _healthz(port), 60, component)
    return creds


def _healthz(port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def kubectl(*args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [_binary("kubectl"), f"--kubeconfig={kubeconfig_path()}", *args],
        input=input_text,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def apply_nodes(resolved: ResolvedConfig) -> int:
    nodes = simulated_nodes(resolved)
    wanted = {n["metadata"]["name"] for n in nodes}
    existing = kubectl(
        "get", "nodes", "-l", f"{SIMULATED_LABEL}=true", "-o", "jsonpath={.items[*].metadata.name}"
    ).stdout.split()
    stale = [name for name in existing if name not in wanted]
    if stale:
        kubectl("delete", "node", *stale)
    document = yaml.safe_dump_all(nodes, sort_keys=False)
    kubectl("apply", "--server-side", "--field-manager=mlplatform-cluster", "-f", "-", input_text=document)
    # Status is a subresource: write capacity there too, or a re-apply would not update it.
    for node in nodes:
        kubectl(
            "patch",
            "node",
            node["metadata"]["name"],
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(
                {"status": {"capacity": node["status"]["capacity"], "allocatable": node["status"]["allocatable"]}}
            ),
        )
    kubectl("wait", "--for=condition=Ready", "node", "-l", f"{SIMULATED_LABEL}=true", "--timeout=120s")
    return len(nodes)


MULTUS_API = Path(__file__).parent / "apis" / "k8s.cni.cncf.io_network-attachment-definitions.yaml"
MULTUS_API_NAME = "network-attachment-definitions.k8s.cni.cncf.io"


def install_environment_apis(resolved: ResolvedConfig) -> list[str]:
    """CRDs of APIs the environment serves beyond Kubernetes (OpenShift Route/SCC, OLM)."""
    wanted: list[str] = []
    if resolved.profile.route_api:
        wanted.append("openshift-api")
    if resolved.profile.operator_install == "olm":
        wanted.append("olm-api")
        gpu = resolved.config.modules.gpu
        # No OLM runs on this plane: the CRDs the subscribed operator's bundle would bring
        # are installed as OLM would install them.
        if gpu.enabled and gpu.install == "operator":
            wanted.append("gpu-operator")
    if resolved.profile.user_workload_monitoring:
        # The cluster's own monitoring stack serves the Prometheus Operator's APIs and
        # owns its namespaces; our monitoring module configures it there.
        wanted.append("prometheus-operator-crds")
        for namespace in resolved.profile.monitoring_namespaces:
            manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            kubectl(
                "apply",
                "--server-side",
                "--field-manager=mlplatform-cluster",
                "-f",
                "-",
                input_text=json.dumps(manifest),
            )
    applied: list[str] = []
    if wanted:
        sources = {name: resolved.upstream(name) for name in wanted}
        folders = [f"{sources[name].raw['mirror']}/{sources[name].files['crds']}" for name in wanted]
        mirror = resolved.mirror_path
        if mirror is None:
            raise ClusterError(
                f"the {resolved.config.environment} environment's APIs come from the upstream mirror: "
                "set mirror.path in the stack or MLPLATFORM_MIRROR (e.g. ../shared/upstream)"
            )
        for folder in folders:
            path = mirror / folder
            if not path.is_dir():
                raise ClusterError(f"{path} is missing from the mirror")
            kubectl("apply", "--server-side", "--field-manager=mlplatform-cluster", "-f", str(path))
            applied.append(folder)
    if resolved.profile.cni_multus:
        # Multus' attachment API, which the environment serves (OpenShift): a CRD of our own here.
        kubectl("apply", "--server-side", "--field-manager=mlplatform-cluster", "-f", str(MULTUS_API))
        applied.append(MULTUS_API_NAME)
    if not applied:
        return applied
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return applied


def bring_up(resolved: ResolvedConfig) -> tuple[int, list[str]]:
    """The plane for a stack: processes running, the environment's APIs, one node per pool
    node. Returns (nodes, API folders installed). One progress step, whoever asks for it."""
    with progress.step(f"start local control plane ({resolved.stack})") as starting:
        starting.phase("start processes")
        start_control_plane()
        starting.phase("environment APIs")
        apis = install_environment_apis(resolved)
        starting.phase("nodes")
        return apply_nodes(resolved), apis


def stop_control_plane(purge: bool = False) -> list[str]:
    stopped = []
    for component in reversed(COMPONENTS):
        pid = running_pid(component)
        if pid:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if process_alive(pid):
                os.killpg(pid, signal.SIGKILL)
            stopped.append(component)
        _pid_file(component).unlink(missing_ok=True)
    if purge:
        import shutil

        shutil.rmtree(cluster_dir(), ignore_errors=True)
    return stopped


def status() -> dict[str, int | None]:
    return {component: running_pid(component) for component in COMPONENTS}
