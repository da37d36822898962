"""`mlplatform cluster up|down|status`."""

from __future__ import annotations

import argparse
import shutil
import sys

from mlplatform.cluster import plane
from mlplatform.validation import EXIT_INVALID, load_or_report


def _docker_available() -> bool:
    return shutil.which("docker") is not None and shutil.which("kind") is not None


def cmd_up(args: argparse.Namespace) -> int:
    resolved = load_or_report(args.stack)
    if resolved is None:
        return EXIT_INVALID
    if _docker_available() and not args.simulated:
        print(
            "A Docker engine and kind are on PATH: create the cluster with "
            "`kind create cluster --name mlplatform --kubeconfig .mlplatform/cluster/kubeconfig`, "
            "or pass --simulated for the local control plane.",
            file=sys.stderr,
        )
        return 1
    try:
        count, apis = plane.bring_up(resolved)
    except plane.ClusterError as exc:
        print(f"mlplatform cluster up: {exc}", file=sys.stderr)
        return 1
    print(f"control plane ready: {count} simulated node(s) for stack {args.stack}")
    if apis:
        print("environment APIs installed: " + ", ".join(apis))
    print(f"kubeconfig: {plane.kubeconfig_path()}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = plane.stop_control_plane(purge=args.purge)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    if args.purge:
        print(f"removed {plane.cluster_dir()}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    states = plane.status()
    for component, pid in states.items():
        print(f"{component:<26} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    return 0 if all(states.values()) else 1


def add_cluster_parser(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="local control plane with simulated (kwok) nodes")
    verbs = cluster.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="start the plane and create the stack's node pools as nodes")
    up.add_argument("--stack", default="lab")
    up.add_argument("--simulated", action="store_true", help="use the local plane even where kind is available")
    up.set_defaults(func=cmd_up)
    down = verbs.add_parser("down", help="stop every process of the plane")
    down.add_argument("--purge", action="store_true", help="also delete its data, certificates and kubeconfig")
    down.set_defaults(func=cmd_down)
    st = verbs.add_parser("status", help="which components run")
    st.set_defaults(func=cmd_status)
