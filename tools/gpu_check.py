"""Helpers of tools/gpu_check.sh (the one-command GPU check); each subcommand is one step of it.

    python tools/gpu_check.py deps [--wheels-dir .whl] [--summary JSON]   # the wheel list against the imports
    python tools/gpu_check.py wheels DIR [--write-hashes] [--summary JSON]  # DIR's wheels against the pins
    python tools/gpu_check.py overrides -- KEY=VALUE ...   # the training overrides name existing keys
    python tools/gpu_check.py train-summary METRICS_JSON SUMMARY_JSON
    python tools/gpu_check.py tests JUNIT_XML [--no-skips]
    python tools/gpu_check.py report --work DIR --out DIR [--dry-run]

The report (``gpu_report.json`` + ``gpu_report.md``) gathers the steps' status, the CUDA tests, the
training run, the measurements of ``benchmarks/bench_gpu.py``, the machine and the code's identity, and
checks the targets of the GPU issue; its last line of output is a one-line summary.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEEL_LIST = REPO / "tools" / "gpu_wheels.txt"

PREINSTALLED_LIST = REPO / "tools" / "gpu_preinstalled.txt"

# Code that runs on the GPU machine: its imports must be preinstalled there or carried as wheels.
IMPORTING_PATHS = ("sparse_detr", "train_net.py", "setup.py", "benchmarks", "tests", "tools")
# Declared requirements of carried wheels that nothing here needs, with the reason.
NOT_NEEDED = {
    "black": "Detectron2 imports it only in LazyConfig.to_py, which nothing here calls",
}
# Modules imported only by code the GPU check does not run, with the reason.
NOT_RUN_ON_GPU = {
    "openvino": "the OpenVINO parity tests (tests/export) and benchmarks/bench_export.py run on CPU machines",
    "onnxruntime_extensions": "ONNX Runtime's plugin-node kernel (sparse_detr/export/runtimes.py) runs in "
    "the CPU deployment tests (tests/export) and benchmarks/bench_export.py only",
    "sybil": "the documentation's snippet tests (tests/docs) run on CPU machines",
}
TARGET_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}

SOURCE_DIRS = ("csrc", "sparse_detr", "configs", "benchmarks", "tools", "tests")
SOURCE_FILES = ("setup.py", "train_net.py", "Makefile", "pyproject.toml")
SOURCE_SUFFIXES = (".py", ".cpp", ".cu", ".h", ".sh", ".txt", ".toml", "")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned_lines() -> list[tuple[str, str, str | None]]:
    """tools/gpu_wheels.txt as (normalised name, version, sha256 or None) per requirement line
    (``name==version --hash=sha256:HEX``, pip's hash syntax)."""
    pinned = []
    for line in WHEEL_LIST.read_text().splitlines():
        fields = line.split("#")[0].split()
        if not fields:
            continue
        name, _, version = fields[0].partition("==")
        if not version:
            raise SystemExit(f"{WHEEL_LIST}: {fields[0]!r} must pin one version (name==version)")
        prefix = "--hash=sha256:"
        hashes = [field.removeprefix(prefix) for field in fields[1:] if field.startswith(prefix)]
        pinned.append((normalise(name), version, hashes[0] if hashes else None))
    return pinned


def wheel_requirements() -> dict[str, str]:
    """tools/gpu_wheels.txt as {normalised name: version}."""
    return {name: version for name, version, _ in _pinned_lines()}


def wheel_hashes() -> dict[str, str | None]:
    """The pinned sha256 of each carried wheel (None where the list has none yet)."""
    return {name: sha256 for name, _, sha256 in _pinned_lines()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_wheels(wheels_dir: Path, write_hashes: bool = False) -> dict:
    """The wheels of ``wheels_dir`` against tools/gpu_wheels.txt: one per requirement, each its pinned sha256.

    With ``write_hashes`` the sha256 of each wheel found is written into the list instead of compared (after
    tools/gpu_wheels.sh made new wheels on purpose). Returns ``{"dir", "verified", "missing", "wrong_hash",
    "unpinned", "unlisted", "errors"}``; ``errors`` is empty when every wheel is present and intact.
    """
    requirements, pins = wheel_requirements(), wheel_hashes()
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    found = {(normalise(w.name.split("-")[0]), w.name.split("-")[1]): w for w in wheels}
    summary = {"dir": str(wheels_dir), "verified": [], "missing": [], "wrong_hash": [], "unpinned": [],
               "unlisted": sorted(w.name for (name, _), w in found.items() if name not in requirements),
               "errors": []}
    actual = {}
    for name, version in requirements.items():
        wheel = found.get((name, version))
        if wheel is None:
            summary["missing"].append(f"{name}=={version}")
            continue
        actual[name] = _sha256(wheel)
        if write_hashes:
            continue
        if pins[name] is None:
            summary["unpinned"].append(wheel.name)
        elif pins[name] != actual[name]:
            summary["wrong_hash"].append(wheel.name)
            summary["errors"].append(f"{wheel}: sha256 {actual[name]} is not the pinned {pins[name]} "
                                     f"({WHEEL_LIST.name}): other contents than the wheel that was tested")
        else:
            summary["verified"].append(wheel.name)
    if write_hashes and actual:
        _write_hashes(actual)
        summary["verified"] = [found[(name, requirements[name])].name for name in actual]
    if summary["missing"]:
        where = f"{wheels_dir} is absent" if not wheels_dir.is_dir() else f"not in {wheels_dir}"
        summary["errors"].append(f"{len(summary['missing'])} of {len(requirements)} wheels missing "
                                 f"({where}): {', '.join(summary['missing'])}; run tools/gpu_wheels.sh")
    if summary["unpinned"]:
        summary["errors"].append(f"no sha256 pinned in {WHEEL_LIST.name} for "
                                 f"{', '.join(summary['unpinned'])}; run tools/gpu_wheels.sh --write-hashes "
                                 "and commit the list")
    if summary["unlisted"]:
        summary["errors"].append(f"{wheels_dir}: {', '.join(summary['unlisted'])} not in {WHEEL_LIST.name}")
    return summary


def _write_hashes(hashes: dict[str, str]) -> None:
    lines = []
    for line in WHEEL_LIST.read_text().splitlines():
        fields = line.split("#")[0].split()
        name = normalise(fields[0].partition("==")[0]) if fields else None
        if name in hashes:
            line = f"{fields[0]} --hash=sha256:{hashes[name]}"
        lines.append(line)
    WHEEL_LIST.write_text("\n".join(lines) + "\n")


def wheels_summary_line(summary: dict) -> str:
    """How the report's last line states the wheels: verified, or what is wrong with them."""
    problems = []
    if summary["missing"]:
        problems.append(f"{len(summary['missing'])} missing from {summary['dir']} (run tools/gpu_wheels.sh)")
    if summary["wrong_hash"]:
        problems.append(f"{len(summary['wrong_hash'])} with other contents than pinned (sha256)")
    if summary["unpinned"]:
        problems.append(f"{len(summary['unpinned'])} without a pinned sha256")
    if summary["unlisted"]:
        problems.append(f"{len(summary['unlisted'])} not in the list")
    return "wheels: " + ("; ".join(problems) if problems else f"{len(summary['verified'])} verified (sha256)")


# ------------------------------------------------------------------------------------------------ deps
def preinstalled() -> set[str]:
    text = "\n".join(line.split("#")[0] for line in PREINSTALLED_LIST.read_text().splitlines())
    return {normalise(name) for name in text.split()}


def imported_modules() -> set[str]:
    """Top-level modules imported (absolute imports) by the code that runs on the GPU machine."""
    files = []
    for name in IMPORTING_PATHS:
        path = REPO / name
        files += [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
    modules = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    sources = [p for p in REPO.rglob("*.py") if ".venv" not in p.parts]
    packages = {p.parent.name for p in sources if p.name == "__init__.py"}
    local = {p.stem for p in sources} | packages | {"sparse_detr", "load_fixture", "tests"}
    return {
        m for m in modules if m not in sys.stdlib_module_names and m not in local and m not in NOT_RUN_ON_GPU
    }


def requirements_of(distribution: str) -> list[str]:
    """Requirements (normalised names) of an installed distribution that apply on the GPU machine."""
    from packaging.requirements import Requirement

    needed = []
    for line in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(TARGET_MARKERS):
            needed.append(normalise(requirement.name))
    return needed


def check_deps(wheels_dir: Path | None, summary_json: Path | None = None) -> int:
    """Exit status 0 when what the code imports, and what the carried wheels require, is on the GPU
    machine or carried (tools/gpu_wheels.txt), and the downloaded wheels match the list."""
    carried, machine = wheel_requirements(), preinstalled()
    owners = importlib.metadata.packages_distributions()
    errors = [f"{name} is in {WHEEL_LIST.name} and on the GPU machine (two versions)"
              for name in sorted(set(carried) & machine)]
    needed: dict[str, str] = {}  # distribution -> why
    for module in sorted(imported_modules()):
        if module not in owners:
            errors.append(f"module {module} is imported but no installed distribution provides it")
        for distribution in owners.get(module, []):
            needed.setdefault(normalise(distribution), f"imported as {module}")
    queue = list(needed)
    while queue:
        distribution = queue.pop()
        if distribution in carried:
            installed = importlib.metadata.version(distribution)
            if installed != carried[distribution]:
                errors.append(f"{distribution}: {WHEEL_LIST.name} pins {carried[distribution]}, the code is "
                              f"tested with {installed}")
            for requirement in requirements_of(distribution):
                if requirement not in needed and requirement not in NOT_NEEDED:
                    needed[requirement] = f"required by {distribution}"
                    queue.append(requirement)
        elif distribution not in machine:
            errors.append(f"{distribution} ({needed[distribution]}) is neither on the GPU machine nor in "
                          f"{WHEEL_LIST.name}")
    unused = sorted(set(carried) - set(needed))
    if unused:
        errors.append(f"{WHEEL_LIST.name} carries {', '.join(unused)}, which nothing needs")
    carried_needed = ", ".join(sorted(set(needed) & set(carried)))
    print(f"[deps] {len(needed)} distributions needed; carried: {carried_needed}")
    if wheels_dir is not None:
        errors += check_wheels_dir(wheels_dir, carried, summary_json)
    for error in errors:
        print(f"[deps] ERROR: {error}")
    print(f"[deps] {'OK' if not errors else f'{len(errors)} problem(s)'}")
    return 1 if errors else 0


def check_wheels_dir(wheels_dir: Path, requirements: dict[str, str], summary_json: Path | None = None
                     ) -> list[str]:
    """The downloaded wheels are exactly the list, each with its pinned sha256, fit in the budget and install
    for CPython 3.12. A missing ``wheels_dir`` is an error: a GPU run without them cannot start."""
    summary = verify_wheels(wheels_dir)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=1))
    print(f"[deps] {wheels_summary_line(summary)}")
    errors = list(summary["errors"])
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    if not wheels:
        return errors
    size_mib = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"[deps] {wheels_dir}: {len(wheels)} wheels, {size_mib:.1f} MiB")
    if size_mib > 48:
        errors.append(f"{wheels_dir} holds {size_mib:.1f} MiB; the working tree travels in 64 MiB")
    # the install command of the GPU machine, rehearsed for CPython 3.12 (pip resolves tags, no install)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--no-index", "--no-deps",
               "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
               "--target", str(Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_check_pip_dry_run"),
               *map(str, wheels)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        errors.append(f"pip refuses the wheels for CPython 3.12: {result.stderr.strip()[-1500:]}")
    return errors


def check_wheels(wheels_dir: Path, write_hashes: bool, summary_json: Path | None) -> int:
    """Exit status 0 when ``wheels_dir`` holds every wheel of the list with its pinned sha256."""
    summary = verify_wheels(wheels_dir, write_hashes)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=1))
    if write_hashes and summary["verified"]:
        print(f"[wheels] wrote the sha256 of {len(summary['verified'])} wheels into {WHEEL_LIST}")
    for error in summary["errors"]:
        print(f"[wheels] ERROR: {error}")
    print(f"[wheels] {wheels_summary_line(summary)}")
    return 1 if summary["errors"] else 0


# ------------------------------------------------------------------------------------------- overrides
def check_overrides(config: str, overrides: list[str]) -> int:
    """The training command's overrides apply to the config and name existing keys (train_net's check)."""
    sys.path.insert(0, str(REPO))
    from detectron2.config import LazyConfig

    from sparse_detr.config.validation import check_command_line_overrides

    cfg = LazyConfig.load(str(REPO / config))
    check_command_line_overrides(cfg, overrides, "train_net.py --config-file CONFIG [options]")
    LazyConfig.apply_overrides(cfg, overrides)
    print(f"[overrides] {len(overrides)} overrides apply to {config}")
    return 0


# ------------------------------------------------------------------------------------------- training
def train_summary(metrics_json: Path, summary_json: Path) -> int:
    """Loss of the training run: finite, and the mean of its last fifth below that of its first fifth."""
    records = [json.loads(line) for line in metrics_json.read_text().splitlines() if line.strip()]
    losses = [(r["iteration"], r["total_loss"]) for r in records if "total_loss" in r]
    if len(losses) < 4:
        raise SystemExit(f"{metrics_json}: {len(losses)} logged losses, too few to judge")
    values = [loss for _, loss in losses]
    fifth = max(1, len(values) // 5)
    first, last = sum(values[:fifth]) / fifth, sum(values[-fifth:]) / fifth
    finite = all(math.isfinite(v) for v in values)
    summary = {"iterations": losses[-1][0] + 1, "logged": len(values), "first_loss": first, "last_loss": last,
               "finite": finite, "falls": finite and last < first}
    final = metrics_json.parent / "final_metrics.json"
    if final.is_file():
        summary["bbox"] = json.loads(final.read_text()).get("bbox")
    summary_json.write_text(json.dumps(summary, indent=1))
    print(f"[train] loss {first:.3f} -> {last:.3f} over {summary['iterations']} iterations, "
          f"finite: {finite}, falls: {summary['falls']}")
    return 0 if summary["falls"] else 1


# ------------------------------------------------------------------------------------------------ tests
def test_counts(junit_xml: Path) -> dict:
    root = ET.parse(junit_xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    keys = ("tests", "failures", "errors", "skipped")
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites) for key in keys}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_names"] = [case.get("classname", "") + "::" + case.get("name", "")
                              for case in root.iter("testcase")
                              if case.find("failure") is not None or case.find("error") is not None]
    return counts


def check_tests(junit_xml: Path, no_skips: bool) -> int:
    """Exit 0 when no test failed (and, on a GPU, none was skipped: a skip there hides a missing kernel)."""
    counts = test_counts(junit_xml)
    print(f"[tests] {counts['passed']} passed, {counts['failures'] + counts['errors']} failed, "
          f"{counts['skipped']} skipped of {counts['tests']}")
    bad = counts["failures"] + counts["errors"] + (counts["skipped"] if no_skips else 0)
    return 1 if bad or counts["tests"] == 0 else 0


# ----------------------------------------------------------------------------------------------- report
def source_fingerprint() -> str:
    """sha256 of the sources (paths and contents), the same on any copy of one commit's working tree."""
    digest = hashlib.sha256()
    paths = [REPO / name for name in SOURCE_FILES if (REPO / name).is_file()]
    for directory in SOURCE_DIRS:
        paths += [p for p in (REPO / directory).rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES
                  and "__pycache__" not in p.parts and not p.name.startswith(".")]
    for path in sorted(paths):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def commit() -> str:
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    result = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown (no git; pass GIT_COMMIT)"


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def evaluate_targets(bench: dict | None, train: dict | None, tests: dict | None) -> dict:
    """The GPU issue's targets: met (True/False) or None when not measured."""
    targets = {"cuda_tests_pass": None, "kernel_faster_everywhere": None, "kernel_3x_dense_fwd_bwd": None,
               "sparse_1.4x_dense_fps": None, "amp_training_finite": None}
    if tests is not None:
        targets["cuda_tests_pass"] = tests["tests"] > 0 and not (tests["failures"] + tests["errors"] +
                                                                 tests["skipped"])
    kernel = (bench or {}).get("kernel") or []
    if kernel and all("speedup" in row for row in kernel):
        targets["kernel_faster_everywhere"] = all(row["speedup"] > 1 for row in kernel)
        dense = [row["speedup"] for row in kernel
                 if row["case"] == "dense encoder" and row["mode"] == "forward+backward"]
        targets["kernel_3x_dense_fwd_bwd"] = bool(dense) and min(dense) >= 3
    inference = ((bench or {}).get("model") or {}).get("inference") or []
    fps = {(row["model"], row["precision"], row["batch"]): row["fps"] for row in inference}
    batch = max((row["batch"] for row in inference), default=None)
    dense, sparse = ("dense", "float32", batch), ("rho=0.1", "float32", batch)
    if dense in fps and sparse in fps:
        targets["sparse_1.4x_dense_fps"] = fps[sparse] >= 1.4 * fps[dense]
    if train is not None:
        targets["amp_training_finite"] = bool(train.get("finite"))
    return targets


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _mib(value) -> str:
    return "-" if value is None else str(round(value))


def markdown(report: dict) -> str:
    env, bench = report["environment"], report.get("bench") or {}
    title = "# GPU check"
    if report["dry_run"]:
        title += " (dry run: CPU, small sizes; the numbers mean nothing)"
    extension = json.dumps((bench.get("environment") or {}).get("extension"))
    lines = [title, "", f"- command: `{report['command']}`",
             f"- machine: {env.get('gpu', 'no GPU')}, driver {env.get('driver', '-')}, "
             f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), Python {env.get('python')}",
             f"- code: commit {report['commit']}, source fingerprint {report['source_fingerprint']}",
             f"- extension: {extension}", f"- total {report['seconds']:.0f} s",
             f"- {wheels_summary_line(report['wheels']) if report.get('wheels') else 'wheels: not checked'}"]
    lines += [f"  - {error}" for error in (report.get("wheels") or {}).get("errors", [])]
    lines += ["", "## Steps", ""]
    lines += _table(["step", "status", "seconds"],
                    [[step["name"], step["status"], step["seconds"]] for step in report["steps"]])
    lines += ["", "## Targets", ""]
    lines += _table(["target", "met"], [[name, "-" if met is None else ("yes" if met else "NO")]
                                        for name, met in report["targets"].items()])
    if report.get("tests"):
        t = report["tests"]
        lines += ["", f"## CUDA tests: {t['passed']} passed, {t['failures'] + t['errors']} failed, "
                      f"{t['skipped']} skipped"] + [f"- failed: {name}" for name in t["failed_names"]]
    if report.get("train"):
        t = report["train"]
        lines += ["", f"## AMP training ({t['iterations']} iterations): loss {t['first_loss']:.3f} -> "
                      f"{t['last_loss']:.3f}, finite {t['finite']}, "
                      f"AP {(t.get('bbox') or {}).get('AP', '-')}"]
    if bench.get("kernel"):
        lines += ["", "## Kernel (ms, median)", ""]
        lines += _table(["case", "queries", "batch", "mode", "PyTorch", "CUDA kernel", "speed-up"], [
            [r["case"], r["queries"], r["batch"], r["mode"], f"{r['pytorch_ms']:.3f}",
             f"{r['extension_ms']:.3f}" if "extension_ms" in r else "-",
             f"{r['speedup']:.2f}x" if "speedup" in r else "-"] for r in bench["kernel"]])
    model = bench.get("model") or {}
    if model.get("inference"):
        lines += ["", f"## Inference, {'x'.join(map(str, model['image_size']))} images", ""]
        lines += _table(["model", "precision", "batch", "latency (ms)", "FPS", "peak MiB"], [
            [r["model"], r["precision"], r["batch"], f"{r['latency_ms']:.1f}", f"{r['fps']:.2f}",
             _mib(r["peak_mib"])] for r in model["inference"]])
    if model.get("training"):
        lines += ["", "## Training step", ""]
        lines += _table(["model", "precision", "batch", "step (ms)", "peak MiB", "loss finite"], [
            [r["model"], r["precision"], r["batch"], f"{r['step_ms']:.1f}", _mib(r["peak_mib"]),
             r["loss_finite"]] for r in model["training"]])
    return "\n".join(lines) + "\n"


def write_report(work: Path, out: Path, dry_run: bool, command: str, seconds: float) -> int:
    import platform

    steps = []
    steps_file = work / "steps.tsv"
    if steps_file.is_file():
        for line in steps_file.read_text().splitlines():
            name, status, step_seconds = line.split("\t")
            steps.append({"name": name, "status": status, "seconds": int(step_seconds)})
    bench = read_json(work / "bench.json")
    train = read_json(work / "train_summary.json")
    wheels = read_json(work / "wheels.json")
    tests = test_counts(work / "cuda_tests.xml") if (work / "cuda_tests.xml").is_file() else None
    environment = {"python": platform.python_version()}
    nvidia = work / "nvidia_smi.csv"
    if nvidia.is_file() and nvidia.read_text().strip():
        gpu, _, driver = nvidia.read_text().strip().splitlines()[0].rpartition(",")
        environment.update(gpu=gpu.strip(), driver=driver.strip())
    try:
        import torch

        environment.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    except ImportError as error:
        environment["torch"] = f"not importable: {error}"
    # a dry run's numbers (CPU, small sizes) say nothing about the targets
    targets = evaluate_targets(None, None, None) if dry_run else evaluate_targets(bench, train, tests)
    report = {"dry_run": dry_run, "command": command, "commit": commit(),
              "source_fingerprint": source_fingerprint(), "seconds": seconds, "environment": environment,
              "steps": steps, "tests": tests, "train": train, "bench": bench, "wheels": wheels,
              "targets": targets}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_report.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_report.md").write_text(markdown(report))
    failed = [s["name"] for s in steps if s["status"] not in ("ok", "skipped")]
    unmet = [name for name, met in report["targets"].items() if met is False]
    # wheels that are absent or not the tested ones make a GPU run impossible or meaningless
    wheels_line = wheels_summary_line(wheels) if wheels else "wheels: not checked"
    wheels_ok = bool(wheels) and not wheels["errors"]
    verdict = "OK" if not failed and not unmet and wheels_ok else "FAILED"
    met = sum(1 for value in report["targets"].values() if value)
    unmeasured = sum(1 for value in report["targets"].values() if value is None)
    print(f"[gpu_check] {verdict}{' (dry run)' if dry_run else ''}: "
          f"{len(steps) - len(failed)}/{len(steps)} steps ok"
          f"{' (failed: ' + ', '.join(failed) + ')' if failed else ''}; "
          f"targets {met} met, {len(unmet)} not met{' (' + ', '.join(unmet) + ')' if unmet else ''}, "
          f"{unmeasured} not measured; {wheels_line}; {environment.get('gpu', 'no GPU')}; {seconds:.0f} s; "
          f"report {out / 'gpu_report.md'}")
    return 0 if verdict == "OK" else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    deps = commands.add_parser("deps")
    deps.add_argument("--wheels-dir", type=Path, default=None)
    deps.add_argument("--summary", type=Path, default=None)
    wheels = commands.add_parser("wheels")
    wheels.add_argument("wheels_dir", type=Path)
    wheels.add_argument("--write-hashes", action="store_true")
    wheels.add_argument("--summary", type=Path, default=None)
    overrides = commands.add_parser("overrides")
    overrides.add_argument("config")
    overrides.add_argument("overrides", nargs="*")
    train = commands.add_parser("train-summary")
    train.add_argument("metrics_json", type=Path)
    train.add_argument("summary_json", type=Path)
    tests = commands.add_parser("tests")
    tests.add_argument("junit_xml", type=Path)
    tests.add_argument("--no-skips", action="store_true")
    report = commands.add_parser("report")
    report.add_argument("--work", type=Path, required=True)
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--dry-run", action="store_true")
    report.add_argument("--command-line", default="tools/gpu_check.sh")
    report.add_argument("--seconds", type=float, default=0.0)
    args = parser.parse_args()
    if args.command == "deps":
        sys.exit(check_deps(args.wheels_dir, args.summary))
    if args.command == "wheels":
        sys.exit(check_wheels(args.wheels_dir, args.write_hashes, args.summary))
    if args.command == "overrides":
        sys.exit(check_overrides(args.config, args.overrides))
    if args.command == "train-summary":
        sys.exit(train_summary(args.metrics_json, args.summary_json))
    if args.command == "tests":
        sys.exit(check_tests(args.junit_xml, args.no_skips))
    sys.exit(write_report(args.work, args.out, args.dry_run, args.command_line, args.seconds))


if __name__ == "__main__":
    main()
