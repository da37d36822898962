"""`mlplatform` command line: validate stacks, build tools, run the local control plane, apply."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from mlplatform import file_backend, progress, pulumi_log
from mlplatform.config import ConfigError
from mlplatform.config.load import display_path
from mlplatform.paths import PULUMI_HOME, REPO_ROOT, STACKS_DIR, STATE_ROOT
from mlplatform.validation import EXIT_INVALID, load_or_report, load_stack

EXIT_MISSING_TOOL = 3
# The passphrase of the lab/ci stacks' local secrets (documented in the README). Real
# environments set PULUMI_CONFIG_PASSPHRASE (or a KMS secrets provider) themselves.
LAB_PASSPHRASE = "mlplatform-lab"
# The Go garbage collector of the CLI and the provider: the file backend re-serialises the whole
# state after every step, and at Go's default (GOGC=100) a quarter of the CLI's CPU is collection.
# Collecting at 5x the live heap rather than 2x, capped by a soft limit, trades memory for it.
GO_RUNTIME_DEFAULTS = {"GOGC": "400", "GOMEMLIMIT": "2GiB"}
# Steps the engine runs at once. The CLI's default, 4 per core (8 on 2 cores), is filled by
# objects the provider waits on (each Service waits 10 s after its endpoints appear): with 8,
# a fresh install of the Kubeflow services had 8 steps in flight and the rest waiting. Most
# steps wait on the API server, not on this machine's CPU.
ENGINE_PARALLEL = "64"


def shipped_stacks() -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS_DIR.glob("Pulumi.*.yaml"))


def cmd_validate(args: argparse.Namespace) -> int:
    targets = [*args.stacks, *args.stack_options] or shipped_stacks()
    failed = False
    for target in targets:
        try:
            resolved = load_stack(target)
        except ConfigError as exc:
            failed = True
            for line in exc.lines():
                print(line, file=sys.stderr)
            continue
        config = resolved.config
        modules = ", ".join(["core", *config.modules.enabled_names()])
        print(
            f"{resolved.source}: valid (environment {config.environment}, "
            f"{len(config.cluster.node_pools)} node pool(s), modules: {modules})"
        )
    return EXIT_INVALID if failed else 0


def cmd_tools(args: argparse.Namespace) -> int:
    from mlplatform.lock import load_lock
    from mlplatform.toolchain.build import ToolBuildError, bin_dir, ensure_tool, select_tools

    try:
        tools = select_tools(load_lock(), args.only)
    except ToolBuildError as exc:
        print(f"mlplatform tools: {exc}", file=sys.stderr)
        return EXIT_INVALID
    unavailable, results = [], []
    width = max(len(t.version) for t in tools)
    print(f"{'tool':<28} {'version':<{width}} {'source':<12} {'started':<8} {'seconds':>8}", flush=True)

    def ensure(tool):
        return time.strftime("%H:%M:%S"), ensure_tool(tool, rebuild=args.rebuild)

    # Two builds at a time: a build's module download and its link use one core or none, and the
    # other build's compile takes up the slack. Rows come as tools are done.
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in as_completed([pool.submit(ensure, tool) for tool in tools]):
            started, result = future.result()
            progress.echo(
                f"{result.tool:<28} {result.version:<{width}} {result.source:<12} {started:<8} {result.seconds:>8.1f}"
            )
            results.append(result)
            if result.source == "unavailable":
                unavailable.append(result)
    print()
    for result in sorted(results, key=lambda r: r.tool):
        print(f"{result.tool}: {result.used()}")
        for note in result.notes:
            print(f"  {note}")
    for result in results:
        for warning in result.warnings:
            print(f"mlplatform tools: warning: {warning}", file=sys.stderr)
    for result in unavailable:
        detail = "\n  ".join(result.detail.splitlines())
        print(f"\n{result.tool} {result.version} could not be built:\n  {detail}", file=sys.stderr)
    print(f"\nbinaries: {bin_dir()}  (export PATH={bin_dir()}:$PATH)")
    return 1 if unavailable else 0


def engine_env(stack: str) -> dict[str, str]:
    """Environment for the Pulumi CLI: local state, our tools first, no plugin downloads."""
    from mlplatform.toolchain.build import bin_dir

    env = dict(os.environ)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PULUMI_BACKEND_URL", file_backend.local_url(STATE_ROOT / "state"))
    env.setdefault("PULUMI_HOME", str(PULUMI_HOME))
    env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
    env.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
    for name, value in GO_RUNTIME_DEFAULTS.items():
        env.setdefault(name, value)
    env.setdefault("PULUMI_PARALLEL", ENGINE_PARALLEL)
    if stack in ("lab", "ci") or stack.startswith("ci-"):
        env.setdefault("PULUMI_CONFIG_PASSPHRASE", LAB_PASSPHRASE)
    pulumi_log.apply(env, PULUMI_HOME)
    return env


def require_engine() -> str | None:
    """The reason `pulumi up` cannot run here, or None when the engine is complete."""
    from mlplatform.lock import load_lock
    from mlplatform.toolchain.build import GROUPS, bin_dir

    missing = [
        name
        for name in (*GROUPS["engine"], "pulumi-language-python-exec")
        if not (bin_dir() / name).exists() and not shutil.which(name)
    ]
    if not missing:
        return None
    provider = load_lock().tools["pulumi-resource-kubernetes"].version
    return (
        "the Pulumi engine is incomplete: " + ", ".join(missing) + " not found.\n"
        "`make tools` builds them from Go modules where the module proxy serves them; otherwise install "
        f"the official Pulumi CLI and run `pulumi plugin install resource kubernetes {provider}`."
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from mlplatform.gpu.doctor import connect, run_checks

    if not args.gpu:
        print("mlplatform doctor: choose what to check (--gpu)", file=sys.stderr)
        return EXIT_INVALID
    resolved = load_or_report(args.stack)
    if resolved is None:
        return EXIT_INVALID
    pools = list(resolved.config.cluster.node_pools)
    pool = None
    if args.pool:
        pool = next((p for p in pools if p.name == args.pool and p.gpu), None)
        if pool is None:
            names = ", ".join(p.name for p in pools if p.gpu)
            print(
                f"mlplatform doctor: {args.pool!r} is not a GPU pool of stack {args.stack} (allowed: {names})",
                file=sys.stderr,
            )
            return EXIT_INVALID
    pool, checks = run_checks(connect(args.host), pool, pools, resolved.config.modules.gpu.min_driver_version)
    print(f"GPU preflight of {args.host} for stack {args.stack}" + (f", pool {pool.name}" if pool else ""))
    for check in checks:
        print(f"  {'PASS' if check.ok else 'FAIL'}  {check.name:<40} {check.detail}")
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_mirror_check(args: argparse.Namespace) -> int:
    from mlplatform.upstream import check_mirror

    setting = args.mirror or os.environ.get("MLPLATFORM_MIRROR")
    if not setting:
        print("mlplatform mirror check: name the mirror (--mirror PATH or MLPLATFORM_MIRROR)", file=sys.stderr)
        return EXIT_INVALID
    mirror = Path(setting)
    if not mirror.is_dir():
        print(f"mlplatform mirror check: {mirror} is not a folder", file=sys.stderr)
        return EXIT_INVALID
    entries = check_mirror(mirror)
    print(f"{'source':<26} {'version':<24} {'file':<28} status")
    for entry in entries:
        print(f"{entry.source:<26} {entry.version:<24} {entry.key:<28} {entry.problem or 'ok'}  {entry.path}")
    missing = [e for e in entries if e.problem]
    print(f"{len(entries) - len(missing)} of {len(entries)} pinned sources satisfied by {mirror}")
    return 1 if missing else 0


def cmd_overlays_prepare(args: argparse.Namespace) -> int:
    """Lay the upstream bases down in overlays/upstream/, so each overlay builds with plain kustomize."""
    from mlplatform.overlays import OVERLAYS_DIR, components, lay_down
    from mlplatform.upstream import upstream_sources

    resolved = load_or_report(args.stack)
    if resolved is None:
        return EXIT_INVALID
    if args.online:
        mirror = None
    elif args.mirror:
        mirror = Path(args.mirror).resolve()
    else:
        mirror = resolved.mirror_path
    if mirror is not None and not mirror.is_dir():
        print(f"mlplatform overlays prepare: the mirror {mirror} is not a folder", file=sys.stderr)
        return EXIT_INVALID
    root = Path(args.dir).resolve() if args.dir else OVERLAYS_DIR
    if not components(root):
        print(f"mlplatform overlays prepare: {root} holds no overlays (<component>/base/)", file=sys.stderr)
        return EXIT_INVALID
    try:
        sources = upstream_sources(resolved.lock_path, resolved.config.versions.pins)
        with progress.step("lay down the upstream bases"):
            laid = lay_down(sources, mirror, root)
    except _source_errors() as exc:
        print(f"mlplatform overlays prepare: {exc}", file=sys.stderr)
        return 1
    for name, key in laid:
        source = sources[name]
        origin = "go module" if source.kind == "go-module" else ("mirror" if mirror else "online")
        print(f"{name:<22} {source.version:<10} {key:<28} {origin}")
    where = f"from the mirror {mirror}" if mirror else "online"
    print(f"{len(laid)} upstream base(s) of stack {args.stack} ({where}) in {display_path(root / 'upstream')}")
    print(f"build one: kustomize build {display_path(root)}/<component>/base (or /<environment>)")
    return 0


# What rendering a stack may fail on once its config is valid: an upstream source or chart that
# cannot be fetched or built. Reported as one line, never a traceback.
def _source_errors() -> tuple[type[Exception], ...]:
    from mlplatform.charts import ChartError
    from mlplatform.overlays import OverlayError
    from mlplatform.render import RenderError
    from mlplatform.upstream import UpstreamError

    return (RenderError, UpstreamError, OverlayError, ChartError)


def cmd_render(args: argparse.Namespace) -> int:
    from mlplatform.config.load import stack_location
    from mlplatform.render import RenderError, render_manifests, write_export

    if load_or_report(args.stack) is None:
        return EXIT_INVALID
    try:
        with progress.step(f"render stack {args.stack}"):
            manifests = render_manifests(args.stack)
    except _source_errors() as exc:
        print(f"mlplatform render: {exc}", file=sys.stderr)
        return 1
    try:
        written, references = write_export(manifests, Path(args.out), stack_location(args.stack)[1], args.secret_store)
    except RenderError as exc:
        print(f"mlplatform render: {exc}", file=sys.stderr)
        return 1
    print(f"{len(written)} object(s) of stack {args.stack} written to {args.out}")
    if references:
        print(f"{len(references)} ExternalSecret(s) for the Secrets filled from stack secrets in {args.out}/secrets")
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    from mlplatform.policy_check import (
        check_stack,
        load_pack_config,
        pack_config_path,
        print_report,
        records_from_manifests,
        run_policies,
    )

    config_path = Path(args.config) if args.config else None
    try:
        if args.manifests:
            folder = Path(args.manifests)
            config = load_pack_config(config_path or pack_config_path(args.environment))
            report = run_policies(records_from_manifests(folder), config)
            title = f"policies over the manifests in {folder} ({args.environment} config)"
        else:
            if load_or_report(args.stack) is None:
                return EXIT_INVALID
            with progress.step(f"policy check of stack {args.stack}"):
                report, render_s, policy_s = check_stack(args.stack, config_path)
            title = f"policies over stack {args.stack}: program under mocks {render_s:.2f} s, policies {policy_s:.3f} s"
    except (ValueError, OSError) as exc:
        print(f"mlplatform policy check: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except _source_errors() as exc:
        print(f"mlplatform policy check: {exc}", file=sys.stderr)
        return 1
    print_report(report, title)
    blocking = report.mandatory
    print(f"{len(report.violations)} violation(s), {len(blocking)} mandatory")
    return 1 if blocking else 0


def cmd_promote(args: argparse.Namespace) -> int:
    from mlplatform.config.load import display_path
    from mlplatform.promote import PromotionError, apply_promotion, format_table, plan_promotion, render_gate

    try:
        plan = plan_promotion(args.source, args.target, force=args.force, gate=render_gate)
    except (PromotionError, ConfigError) as exc:
        print(f"mlplatform promote: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"promote {plan.source} -> {plan.target} ({display_path(plan.target_file)})")
    if plan.changes:
        print(format_table(plan))
    print(f"{len(plan.changes)} version(s) change, {plan.unchanged} unchanged")
    if plan.problems:
        print(f"not promoted: {plan.target} stays as it is", file=sys.stderr)
        for problem in plan.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    try:
        written = apply_promotion(plan)
    except PromotionError as exc:
        print(f"mlplatform promote: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if written:
        print(f"written: {display_path(plan.target_file)}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from mlplatform.promote import write_record
    from mlplatform.safe_write import FileLockedError

    args.stack = stack_argument(args, "record", default=None)
    if args.stack is None:
        print("mlplatform record: name the stack (--stack NAME)", file=sys.stderr)
        return EXIT_INVALID
    if load_or_report(args.stack) is None:
        return EXIT_INVALID
    try:
        path = write_record(args.stack, args.result, Path(args.out) if args.out else None)
    except (FileLockedError, OSError) as exc:
        print(f"mlplatform record: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"recorded {args.result} for stack {args.stack} in {path}")
    return 0


def stack_argument(args: argparse.Namespace, command: str, default: str | None = "lab") -> str | None:
    """`--stack NAME`, or the older positional STACK (still accepted, with a notice)."""
    positional = getattr(args, "stack_positional", None)
    if positional is None:
        return args.stack or default
    if args.stack and args.stack != positional:
        print(f"mlplatform {command}: two stacks named ({positional}, --stack {args.stack}): name one", file=sys.stderr)
        return None
    print(f"mlplatform {command}: the positional stack is deprecated: use --stack {positional}", file=sys.stderr)
    return positional


def up_tools(lock, local_plane: bool) -> list:
    """The tools `up` needs: the engine and the renderers; the local plane's only where it starts one."""
    from mlplatform.toolchain.build import select_tools

    return select_tools(lock, ["engine", "render", *(["cluster"] if local_plane else [])])


def confirm(question: str) -> bool:
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_up(args: argparse.Namespace) -> int:
    """Tools, then the local control plane (unless the stack names its own cluster), then the engine."""
    from mlplatform.cluster import plane
    from mlplatform.lock import load_lock
    from mlplatform.stack_secrets import targets_local_plane
    from mlplatform.toolchain.build import ensure_tool

    stack = stack_argument(args, "up")
    if stack is None:
        return EXIT_INVALID
    args.stack = stack
    resolved = load_or_report(args.stack)
    if resolved is None:
        return EXIT_INVALID
    local_plane = targets_local_plane(resolved)
    cluster = resolved.config.cluster
    target = f"kubeconfig {cluster.kubeconfig}" + (f", context {cluster.context}" if cluster.context else "")
    # A cluster of the user's: its changes are shown and agreed to before they are applied.
    if not local_plane and not args.yes and not sys.stdin.isatty():
        print(
            f"mlplatform up: stack {args.stack} targets {target}; without a terminal to confirm the preview "
            "on, pass --yes to apply it unattended",
            file=sys.stderr,
        )
        return EXIT_INVALID
    with progress.step("check tools") as checking:
        for tool in up_tools(load_lock(), local_plane):
            checking.phase(tool.name)
            result = ensure_tool(tool)
            # echo: these lines are printed while the step's live line may be on the terminal.
            progress.echo(f"tool {result.tool}: {result.used()}")
            for line in [*result.notes, *(f"warning: {w}" for w in result.warnings)]:
                progress.echo(f"  {line}")
            if result.source == "unavailable":
                for line in result.detail.splitlines():
                    progress.echo(f"  {line.strip()}")
    if local_plane:
        try:
            count, _ = plane.bring_up(resolved)
        except plane.ClusterError as exc:
            print(f"mlplatform up: {exc}", file=sys.stderr)
            return 1
        print(f"local control plane ready: {count} simulated node(s), kubeconfig {plane.kubeconfig_path()}")
    reason = require_engine()
    if reason:
        print(f"mlplatform up: {reason}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    env = engine_env(args.stack)
    backend_root = file_backend.root(env["PULUMI_BACKEND_URL"])
    if backend_root is not None:
        backend_root.mkdir(parents=True, exist_ok=True)
    # The stack's secrets before the engine starts: generated where nobody must choose them.
    from mlplatform.stack_secrets import SecretsError, StackSecrets, missing_lines

    store = StackSecrets(args.stack, resolved, env)
    try:
        store.ensure_stack()
        # A team stack's services and secrets are its platform stack's (config/team_stacks.py).
        generated, missing = store.generate() if not resolved.is_team_stack else ([], [])
    except SecretsError as exc:
        print(f"mlplatform up: {exc}", file=sys.stderr)
        return 1
    if generated:
        print(f"generated stack secrets: {', '.join(generated)} (in {display_path(store.config_file())})")
    if missing:
        print("mlplatform up: stack secrets not set:", *missing_lines(missing, store), sep="\n", file=sys.stderr)
        return 1
    from mlplatform import checkpoints

    fresh = checkpoints.is_fresh(args.stack, REPO_ROOT, env)
    if not fresh and not resolved.is_team_stack and resolved.config.platform.crd_install == "release":
        # A stack installed with each CRD a resource of its own: its CRDs move into the releases
        # first (a plain `up` would stop at Helm's refusal to take them over).
        from mlplatform.config.load import read_stack_file, stack_location
        from mlplatform.crd_adoption import AdoptionError, adopt

        stack_path, _ = stack_location(args.stack)
        try:
            for line in adopt(args.stack, REPO_ROOT, env, read_stack_file(stack_path), stack_cluster(stack_path)):
                print(line)
        except AdoptionError as exc:
            print(f"mlplatform up: {exc}", file=sys.stderr)
            return 1
    if local_plane:
        # The embedded plane is disposable: applied without a preview.
        cmd = ["pulumi", "up", "--stack", args.stack, "--yes", "--skip-preview", *store.config_args()]
    elif args.yes:
        # Unattended: `pulumi up` still prints its plan before it applies.
        cmd = ["pulumi", "up", "--stack", args.stack, "--yes", *store.config_args()]
    else:
        preview = ["pulumi", "preview", "--stack", args.stack, *store.config_args()]
        returncode = subprocess.run(preview, cwd=REPO_ROOT, env=env).returncode
        if returncode:
            return returncode
        if not confirm(f"apply these changes of stack {args.stack} to {target}?"):
            print("mlplatform up: not applied", file=sys.stderr)
            return 1
        cmd = ["pulumi", "up", "--stack", args.stack, "--yes", "--skip-preview", *store.config_args()]
    up_env = checkpoints.up_env(env, fresh)
    if up_env.get(checkpoints.SKIP) == "true" and fresh:
        print(
            f"stack {args.stack} holds no resources: a fresh install, its state written once at the end "
            f"(if it is interrupted: mlplatform recover --stack {args.stack}, then up again)"
        )
    returncode = subprocess.run(cmd, cwd=REPO_ROOT, env=up_env).returncode
    if returncode == 0:
        from mlplatform.signin import password_command, sign_in_lines

        for line in sign_in_lines(resolved, password_command(args.stack, store.config_args())):
            print(line)
    return returncode


def cmd_secrets(args: argparse.Namespace) -> int:
    """The stack's secrets: which are set (never their values), new values for generatable ones."""
    from mlplatform.stack_secrets import SecretsError, StackSecrets, missing_lines, secret_needs

    resolved = load_or_report(args.stack)
    if resolved is None:
        return EXIT_INVALID
    store = StackSecrets(args.stack, resolved, engine_env(args.stack))
    if args.verb == "list":
        stored = store.stored()
        print(f"stack {args.stack}: secrets in {display_path(store.config_file())}")
        for need in secret_needs(resolved):
            state = "set" if need.name in stored else "missing"
            origin = "generatable" if need.generatable else "issued elsewhere"
            print(f"  {need.name:<26} {state:<8} {origin:<17} for {', '.join(need.uses)}")
        return 1 if store.missing() else 0
    try:
        file_backend_root = file_backend.root(store.env["PULUMI_BACKEND_URL"])
        if file_backend_root is not None:
            file_backend_root.mkdir(parents=True, exist_ok=True)
        store.ensure_stack()
        if args.verb == "rotate":
            rotated = store.rotate(args.names)
            print(f"new values for {', '.join(rotated)} in {display_path(store.config_file())}")
            print(
                f"`pulumi up` (or `mlplatform up --stack {args.stack}`) rolls the pods that read them; see docs/credentials.md"
            )
            return 0
        generated, missing = store.generate()
    except SecretsError as exc:
        print(f"mlplatform secrets: {exc}", file=sys.stderr)
        return 1
    print(f"generated: {', '.join(generated) or 'none missing'} (in {display_path(store.config_file())})")
    if missing:
        print("still to set, issued outside the platform:", *missing_lines(missing, store), sep="\n", file=sys.stderr)
        return 1
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    """After an interrupted `pulumi up`: release dead locks, refresh dropping pending creates."""
    import yaml

    from mlplatform.recover import RecoverError, recover

    reason = require_engine()
    if reason:
        print(f"mlplatform recover: {reason}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["name"]
    try:
        # A stack whose config is kept per checkout (mlplatform.stack_secrets) is read from that file.
        local = STATE_ROOT / "stacks" / f"Pulumi.{args.stack}.yaml"
        in_checkout = Path(args.cwd).resolve() == REPO_ROOT and local.is_file()
        config_args = ["--config-file", str(local)] if in_checkout else []
        stack_file = local if in_checkout else Path(args.cwd) / "stacks" / f"Pulumi.{args.stack}.yaml"
        cluster = stack_cluster(stack_file) if stack_file.is_file() else None
        done = recover(args.stack, project, Path(args.cwd), engine_env(args.stack), config_args, cluster)
    except RecoverError as exc:
        print(f"mlplatform recover: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    print(f"stack {args.stack} recovered: run `pulumi up --stack {args.stack}` to converge")
    return 0


def stack_cluster(stack_file: Path) -> Any:
    """The cluster a stack file targets, as `recover` reaches it with kubectl."""
    from mlplatform.modules.base import target_kubeconfig
    from mlplatform.paths import BIN_DIR
    from mlplatform.recover import Cluster

    resolved = load_stack(str(stack_file))
    kubectl = str(BIN_DIR / "kubectl") if (BIN_DIR / "kubectl").exists() else shutil.which("kubectl") or "kubectl"
    command = [kubectl]
    kubeconfig = target_kubeconfig(resolved)
    if kubeconfig:
        command.append(f"--kubeconfig={kubeconfig}")
    context = resolved.config.cluster.context or resolved.provider_settings.get("context")
    if context:
        command.append(f"--context={context}")
    return Cluster(kubectl=tuple(command), namespace=resolved.config.platform.namespace)


def cmd_adopt_crds(args: argparse.Namespace) -> int:
    """Move a stack's CRDs, held one resource each, into the releases the program declares."""
    from mlplatform.config.load import read_stack_file
    from mlplatform.crd_adoption import AdoptionError, adopt

    reason = require_engine()
    if reason:
        print(f"mlplatform adopt-crds: {reason}", file=sys.stderr)
        return EXIT_MISSING_TOOL
    local = STATE_ROOT / "stacks" / f"Pulumi.{args.stack}.yaml"
    in_checkout = Path(args.cwd).resolve() == REPO_ROOT and local.is_file()
    stack_file = local if in_checkout else Path(args.cwd) / "stacks" / f"Pulumi.{args.stack}.yaml"
    try:
        resolved = load_stack(str(stack_file))
        if resolved.config.platform.crd_install != "release":
            print(
                f"stack {args.stack}: platform.crdInstall is {resolved.config.platform.crd_install}: nothing to adopt"
            )
            return 0
        done = adopt(
            args.stack,
            Path(args.cwd),
            engine_env(args.stack),
            read_stack_file(stack_file),
            stack_cluster(stack_file),
        )
    except (AdoptionError, ConfigError) as exc:
        print(f"mlplatform adopt-crds: {exc}", file=sys.stderr)
        return 1
    for line in done or [f"stack {args.stack} holds no CRD of its own: nothing to adopt"]:
        print(line)
    return 0


def version_line() -> str:
    """This package's version and the Pulumi the lock pins (CLI built from Go modules, Python SDK)."""
    from importlib.metadata import PackageNotFoundError, version

    from mlplatform import __version__
    from mlplatform.lock import load_lock

    try:
        package = version("mlplatform")
    except PackageNotFoundError:
        package = __version__
    lock = load_lock()
    return f"mlplatform {package} (Pulumi CLI {lock.tools['pulumi'].version}, Python SDK {lock.python['pulumi']})"


class VersionAction(argparse.Action):
    """`--version`, read when asked for: the lock is not read on every command."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlplatform", description=__doc__)
    parser.add_argument("--version", action=VersionAction, help="the package version and the pinned Pulumi")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="validate stack configs (all shipped stacks by default)")
    validate.add_argument("stacks", nargs="*", metavar="STACK_NAME|PATH")
    validate.add_argument(
        "--stack", action="append", default=[], dest="stack_options", metavar="STACK_NAME|PATH", help="(repeatable)"
    )
    validate.set_defaults(func=cmd_validate)

    tools = sub.add_parser("tools", help="build (or reuse) the pinned tools from Go modules")
    tools.add_argument("--only", action="append", metavar="TOOL|GROUP", help="engine, render, cluster or a tool name")
    tools.add_argument("--rebuild", action="store_true", help="ignore the cache and PATH, build again")
    tools.add_argument("--jobs", type=int, default=2, metavar="N", help="tools built at a time (default 2)")
    tools.set_defaults(func=cmd_tools)

    render = sub.add_parser("render", help="write every object a stack applies as YAML (no cluster needed)")
    render.add_argument("--stack", default="lab")
    render.add_argument("--out", required=True, metavar="DIR")
    render.add_argument(
        "--secret-store",
        default="mlplatform",
        metavar="NAME",
        help="the ClusterSecretStore the ExternalSecrets in DIR/secrets read from (default mlplatform)",
    )
    render.set_defaults(func=cmd_render)

    mirror = sub.add_parser("mirror", help="the offline mirror of upstream sources")
    mirror_verbs = mirror.add_subparsers(dest="verb", required=True)
    check = mirror_verbs.add_parser("check", help="which pinned upstream sources the mirror satisfies")
    check.add_argument("--mirror", help="the mirror folder (default: MLPLATFORM_MIRROR)")
    check.set_defaults(func=cmd_mirror_check)

    overlays = sub.add_parser("overlays", help="the kustomize overlays (overlays/<component>/{base,<environment>})")
    overlay_verbs = overlays.add_subparsers(dest="verb", required=True)
    prepare = overlay_verbs.add_parser(
        "prepare", help="lay the pinned upstream bases down in overlays/upstream/ for plain `kustomize build`"
    )
    prepare.add_argument(
        "--stack", default="lab", metavar="STACK_NAME|PATH", help="whose pins and mirror (default lab)"
    )
    origin = prepare.add_mutually_exclusive_group()
    origin.add_argument("--mirror", help="the mirror folder (default: the stack's mirror.path or MLPLATFORM_MIRROR)")
    origin.add_argument("--online", action="store_true", help="remote bases at the locked refs, even with a mirror set")
    prepare.add_argument(
        "--dir", metavar="DIR", help="an overlays folder elsewhere (default: this checkout's overlays/)"
    )
    prepare.set_defaults(func=cmd_overlays_prepare)

    doctor = sub.add_parser("doctor", help="read-only preflight of a node against the stack (--gpu)")
    doctor.add_argument(
        "--gpu", action="store_true", help="check a GPU host: driver, model, MIG mode, container toolkit"
    )
    doctor.add_argument("--stack", default="lab")
    doctor.add_argument("--pool", help="the GPU pool the host belongs to (default: the one whose model it has)")
    doctor.add_argument("--host", default="local://", help="testinfra host spec: local://, ssh://user@host, ...")
    doctor.set_defaults(func=cmd_doctor)

    policy = sub.add_parser("policy", help="the CrossGuard policy pack (policies/), run offline")
    policy_verbs = policy.add_subparsers(dest="verb", required=True)
    policy_check = policy_verbs.add_parser(
        "check", help="run every policy over a stack (program under mocks) or a folder of manifests"
    )
    policy_check.add_argument("--stack", default="lab", metavar="STACK_NAME|PATH")
    policy_check.add_argument("--manifests", metavar="DIR", help="judge these manifests instead of a stack")
    policy_check.add_argument(
        "--environment", default="lab", choices=("lab", "openshift", "cloud"), help="pack config for --manifests"
    )
    policy_check.add_argument("--config", metavar="FILE", help="pack config (default: policies/config.<env>.json)")
    policy_check.set_defaults(func=cmd_policy_check)

    promote = sub.add_parser("promote", help="copy one stack's version pins into another, gated by validation")
    promote.add_argument("source", metavar="FROM")
    promote.add_argument("target", metavar="TO")
    promote.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    promote.add_argument("--force", action="store_true", help="allow promoting backwards (e.g. cloud -> lab)")
    promote.set_defaults(func=cmd_promote)

    record = sub.add_parser("record", help="record the outcome of a stack's e2e/preview run (promotion reads it)")
    record.add_argument("--stack", metavar="STACK_NAME|PATH")
    record.add_argument("stack_positional", nargs="?", metavar="STACK", help=argparse.SUPPRESS)
    record.add_argument("--result", choices=("passed", "failed"), required=True)
    record.add_argument("--out", help="record file (default: versions.record of the stack, else .mlplatform/records/)")
    record.set_defaults(func=cmd_record)

    up = sub.add_parser("up", help="build tools, start the local plane, apply a stack with the Pulumi engine")
    up.add_argument("--stack", help="the stack (default lab)")
    # `mlplatform up NAME`, the older spelling: still accepted, not shown.
    up.add_argument("stack_positional", nargs="?", metavar="STACK", help=argparse.SUPPRESS)
    up.add_argument(
        "--yes", action="store_true", help="a cluster of your own: apply without the preview and confirmation"
    )
    up.set_defaults(func=cmd_up)

    secrets = sub.add_parser("secrets", help="a stack's credentials: list them, generate the missing ones, rotate")
    secrets.add_argument("--stack", default="lab")
    secret_verbs = secrets.add_subparsers(dest="verb", required=True)
    secret_list = secret_verbs.add_parser("list", help="which secrets the stack needs and which are set (no values)")
    secret_generate = secret_verbs.add_parser("generate", help="new values for the missing ones nobody must choose")
    secret_rotate = secret_verbs.add_parser("rotate", help="new values for these secrets")
    secret_rotate.add_argument("names", nargs="+", metavar="NAME")
    for verb in (secret_list, secret_generate, secret_rotate):
        verb.add_argument("--stack", default=argparse.SUPPRESS, help="the stack (default lab)")
    secrets.set_defaults(func=cmd_secrets)

    recover = sub.add_parser("recover", help="after an interrupted `pulumi up`: release dead locks, refresh the state")
    recover.add_argument("--stack", default="lab")
    recover.add_argument("--cwd", default=str(REPO_ROOT), help="the Pulumi project folder (default: this repository)")
    recover.set_defaults(func=cmd_recover)

    adopt = sub.add_parser(
        "adopt-crds",
        help="move a stack's CRDs, each a resource of its own, into the Helm releases the program declares",
    )
    adopt.add_argument("--stack", default="lab")
    adopt.add_argument("--cwd", default=str(REPO_ROOT), help="the Pulumi project folder (default: this repository)")
    adopt.set_defaults(func=cmd_adopt_crds)

    from mlplatform.cluster.cli import add_cluster_parser

    add_cluster_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # Checked before any command starts, so a bad value stops it before it changes anything.
        pulumi_log.setting(os.environ)
    except ValueError as exc:
        print(f"mlplatform: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
