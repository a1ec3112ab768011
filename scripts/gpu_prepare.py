"""Prepare what a GPU window carries (`make gpu-prepare`; run here, with the project's .venv).

    .venv/bin/python scripts/gpu_prepare.py                # -> .gpu/ (git-ignored), carried as `.gpu`

The GPU machine has Python 3.12, its own torch and many packages (scripts/gpu_machine_packages.txt)
but no package registry. This writes into one folder:

- `wheels/`: Python 3.12 manylinux wheels of every runtime dependency of this project (its
  dependencies, walked recursively with their extras and markers) that the GPU machine lacks, at the
  versions installed here (what CI resolves), except the pins below;
- `data/`: the datasets the window needs (MNIST's four `.gz` files, California Housing's `.pkz`);
- `carry.json`: what is carried and its size.

Then it checks that every carried wheel's requirements are carried or present there, and that the
whole tree that travels (tracked files + this folder) stays under --limit-mib. scripts/gpu_window.sh
installs the wheels with `pip install --no-index --no-deps --target`.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
PROJECT = "model-serving"
# Exact versions the GPU window runs (service/patches fingerprint uvicorn 0.54.0; BentoML 1.4.39 is
# the version the service tests and benchmarks ran on); the rest: the versions installed here.
PINS = {"bentoml": "1.4.39", "uvicorn": "0.54.0"}
# The GPU machine's interpreter and platform, for markers and for `pip download`.
MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17, 12, 5)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]
# Present on the GPU machine and used there besides the runtime dependencies: the GPU tests' runner.
REHEARSAL_EXTRAS = ("pytest", "iniconfig", "pluggy")
DATA_FILES = [
    "cal_housing_py3.pkz",
    *(
        f"MNIST/raw/{name}.gz"
        for name in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    ),
]


def present_there(path: Path) -> dict[str, Version | None]:
    """{package: its version there, None where not known} from the list (`name` or `name==version`)."""
    present: dict[str, Version | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            present[canonicalize_name(name)] = Version(version) if version else None
    return present


def excludes(req: Requirement, version: Version | None) -> bool:
    """Whether `req` rules out `version` (None, a version not known: not ruled out)."""
    return version is not None and not req.specifier.contains(version, prereleases=True)


def clashes(deps: dict[str, set[str]], present: dict[str, Version | None]) -> dict[str, str]:
    """{package: why} for the packages the GPU machine has at a version that a requirement of this
    project or of one of its dependencies (as installed here) excludes: those are carried too."""
    found = {}
    for name in [PROJECT, *deps]:
        for text in md.distribution(name).requires or []:
            req = Requirement(text)
            dep = canonicalize_name(req.name)
            if applies(req, deps.get(name, set())) and excludes(req, present.get(dep)):
                found[dep] = f"{name} needs {req}, the GPU machine has {present[dep]}"
    return found


def applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**MARKERS, "extra": e}) for e in {"", *extras})


def closure(root: str) -> dict[str, set[str]]:
    """{distribution: extras asked of it} for every runtime dependency of `root`, recursively, with
    the metadata installed in this interpreter and the GPU machine's markers."""
    found: dict[str, set[str]] = {}
    todo = [(root, set())]
    while todo:
        name, extras = todo.pop()
        for text in md.distribution(name).requires or []:
            req = Requirement(text)
            if not applies(req, extras):
                continue
            key = canonicalize_name(req.name)
            new_extras = set(req.extras) - found.get(key, set())
            if key not in found or new_extras:
                found.setdefault(key, set()).update(req.extras)
                todo.append((key, found[key]))
    return found


def download(wanted: dict[str, str], dest: Path) -> list[Path]:
    """Python 3.12 manylinux wheels of `wanted` ({name: version}) into dest; stale wheels removed."""
    dest.mkdir(parents=True, exist_ok=True)
    keep = set()
    for wheel in dest.glob("*.whl"):
        name, version, *_ = parse_wheel_filename(wheel.name)
        if wanted.get(canonicalize_name(name)) == str(version):
            keep.add(canonicalize_name(name))
        else:
            wheel.unlink()
    missing = [f"{n}=={v}" for n, v in sorted(wanted.items()) if n not in keep]
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(dest),
               *(a for p in PLATFORMS for a in ("--platform", p)), *missing]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        # pip's warnings about this machine's local index folders are noise; its errors are not
        for line in (proc.stdout + proc.stderr).splitlines():
            if "is ignored: it is neither a file nor a directory" not in line:
                print(line, file=sys.stderr)
        if proc.returncode:
            raise SystemExit(f"error: pip download failed (exit {proc.returncode})")
    return sorted(dest.glob("*.whl"))


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(meta).decode())
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []]


def check(wheels: list[Path], extras: dict[str, set[str]], present: dict[str, Version | None]) -> list[str]:
    """Every requirement of every carried wheel (with the extras asked of it): carried at a version
    that satisfies it, or present on the GPU machine (at a version that satisfies it, where the list
    knows it). Returns the problems."""
    carried = {}
    for wheel in wheels:
        name, version, *_ = parse_wheel_filename(wheel.name)
        carried[canonicalize_name(name)] = version
    problems = []
    for wheel in wheels:
        key = canonicalize_name(parse_wheel_filename(wheel.name)[0])
        for req in wheel_requirements(wheel):
            if not applies(req, extras.get(key, set())):
                continue
            dep = canonicalize_name(req.name)
            if dep in carried:
                if excludes(req, carried[dep]):
                    problems.append(f"{wheel.name} needs {req}, carried: {dep} {carried[dep]}")
            elif dep not in present:
                problems.append(f"{wheel.name} needs {req}: neither carried nor on the GPU machine")
            elif excludes(req, present[dep]):
                problems.append(f"{wheel.name} needs {req}, the GPU machine has {dep} {present[dep]}")
    return problems


def tree_bytes() -> int:
    """Bytes of what travels besides the carried folder: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout  # fmt: skip
    paths = (REPO / p for p in out.decode().split("\0") if p)
    return sum(p.stat().st_size for p in paths if p.is_file())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python scripts/gpu_prepare.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=REPO / ".gpu", help="the folder to carry (git-ignored)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "data")))
    p.add_argument(
        "--present", type=Path, default=REPO / "scripts" / "gpu_machine_packages.txt",
        help="packages the GPU machine has",
    )  # fmt: skip
    p.add_argument("--limit-mib", type=float, default=55.0, help="the most the whole carry may weigh")
    p.add_argument(
        "--rehearsal-list", type=Path, default=None,
        help="also write here `name==version` of the dependencies the GPU machine has (and pytest), at the "
        "versions installed here: what scripts/gpu_rehearse.sh installs to stand in for that machine",
    )  # fmt: skip
    args = p.parse_args(argv)

    present = present_there(args.present)
    deps = closure(PROJECT)
    clash = clashes(deps, present)
    for why in clash.values():
        print(f"carried although the GPU machine has it: {why}")
    wanted = {}
    for name in sorted(deps):
        if name in present and name not in clash:
            continue
        wanted[name] = PINS.get(name) or md.version(name)
    there = len(deps) - len(wanted)
    print(f"{len(deps)} runtime dependencies: {there} on the GPU machine, {len(wanted)} carried")
    if args.rehearsal_list:
        # at the GPU machine's version where the list knows it (a carried wheel then shadows it, as there)
        there = dict.fromkeys(n for n in [*sorted(deps), *REHEARSAL_EXTRAS] if n in present)
        args.rehearsal_list.parent.mkdir(parents=True, exist_ok=True)
        args.rehearsal_list.write_text("".join(f"{n}=={present[n] or md.version(n)}\n" for n in there))
    wheels = download(wanted, args.out / "wheels")
    problems = check(wheels, deps, present)

    data = args.out / "data"
    for rel in DATA_FILES:
        src = args.data_dir / rel
        if not src.is_file():
            problems.append(f"{src} is missing (DATA_DIR: see ../shared/datasets/README.md)")
            continue
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (data / rel).is_file() or (data / rel).stat().st_size != src.stat().st_size:
            shutil.copyfile(src, data / rel)

    wheel_bytes, data_bytes = folder_bytes(args.out / "wheels"), folder_bytes(data)
    sizes = {
        "wheels": wheel_bytes,
        "data": data_bytes,
        "other carried files": folder_bytes(args.out) - wheel_bytes - data_bytes,
        "working tree": tree_bytes(),
    }
    total = sum(sizes.values())
    for what, size in sizes.items():
        print(f"  {what:20s} {size / 2**20:6.1f} MiB")
    print(f"  {'total':20s} {total / 2**20:6.1f} MiB (limit {args.limit_mib} MiB; the device takes 64)")
    if total > args.limit_mib * 2**20:
        problems.append(f"the carry weighs {total / 2**20:.1f} MiB, over {args.limit_mib} MiB")
    (args.out / "carry.json").write_text(json.dumps({
        "wheels": {w.name: w.stat().st_size for w in wheels},
        "data": DATA_FILES, "mib": {k: round(v / 2**20, 2) for k, v in sizes.items()},
        "total_mib": round(total / 2**20, 2),
    }, indent=2))  # fmt: skip
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"ready: {args.out} ({len(wheels)} wheels); carry it as `.gpu` (scripts/gpu_window.sh)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
