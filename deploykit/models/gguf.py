"""Export a Hugging Face model folder to GGUF with llama.cpp's own converter.

The converter, `convert_hf_to_gguf.py`, with the `conversion` package it imports and the
gguf-py it is written against, comes from the source distribution of llama-cpp-python,
which vendors llama.cpp: `pip download` fetches it (pip prepares its metadata but compiles
nothing), its sha256 is checked against the pinned one, those files alone are extracted
and cached, and it is never built or installed. The converter runs as a child process
with the vendored gguf-py first on its path: the PyPI `gguf` is older than the converter.

Not done here: k-quants (Q4_K_M and the like) need llama.cpp's compiled `llama-quantize`;
hub ids are not downloaded (convert a local folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from .. import _env
from ..errors import InvalidArgumentError, ModelBuildError
from ..launch import failure_report, run_job
from ._build import building, cache_key, cached_build, is_cached, pip_download
from .resolve import resolve_model

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CONVERTER_VERSION = f"{PACKAGE}=={VERSION}"
BUILD_VERSION = 1  # bump when the extraction or the export changes: old caches are ignored

OUTTYPES = ("f16", "q8_0", "f32", "bf16")  # what convert_hf_to_gguf.py writes without llama.cpp
CONVERT_TIMEOUT_S = 3600.0

_VENDOR = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
# The converter imports its `conversion` package and gguf-py; LICENSE goes along with them.
_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
_SCRIPT = "convert_hf_to_gguf.py"
_CHUNK_BYTES = 1 << 20


def export_gguf(
    model, outtype: str = "f16", *, progress: bool = True, timeout_s: float = CONVERT_TIMEOUT_S
) -> Path:
    """Convert a built-in model or local Hugging Face folder to GGUF; return the cached file.

    outtype is one of f16, q8_0, f32, bf16. The file is cached by the model's build (a
    local folder: its path and its files' sizes and times), outtype and converter version,
    so a second call returns at once. The first call also fetches the converter (76 MB).
    """
    if outtype not in OUTTYPES:
        raise InvalidArgumentError(
            f"unknown outtype {outtype!r}; use one of {', '.join(OUTTYPES)} "
            "(k-quants such as Q4_K_M need llama.cpp's llama-quantize)."
        )
    source = resolve_model(model, progress=progress)
    if source.folder is None:
        raise InvalidArgumentError(
            f"{source.location!r} is not a local folder (a hub id, or a path that does not "
            "exist); export_gguf converts local Hugging Face folders only. Download it first, "
            f"e.g. `hf download {source.location} --local-dir ./{source.location.split('/')[-1]}`, "
            "and pass that folder."
        )
    folder = source.folder.resolve()
    label = source.name if source.kind == "builtin" else folder.name
    key = cache_key(
        BUILD_VERSION, CONVERTER_VERSION, SDIST_SHA256, outtype, str(folder), _fingerprint(folder)
    )
    done = cached_build(
        f"{label}-{outtype}",
        key,
        lambda dest: _convert(folder, label, outtype, dest, progress, timeout_s),
        kind="gguf",
    )
    return done / _gguf_name(label, outtype)


def _converter_key() -> str:
    return cache_key(BUILD_VERSION, PACKAGE, VERSION, SDIST_SHA256, _MEMBERS)


def converter_ready() -> bool:
    """Return True when llama.cpp's converter is cached (export_gguf then needs no network)."""
    return is_cached("llama-cpp-converter", _converter_key(), kind="tools")


def converter_path(progress: bool = True) -> Path:
    """Return the cached convert_hf_to_gguf.py (gguf-py beside it), fetching it on first use."""
    folder = cached_build(
        "llama-cpp-converter", _converter_key(), lambda dest: _fetch(dest, progress), kind="tools"
    )
    return folder / _SCRIPT


def pip_command(folder: str | Path) -> list[str]:
    """Return the pip command that downloads llama-cpp-python's source distribution only."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"{PACKAGE}=={VERSION}",
        "-d",
        str(folder),
    ]


def _gguf_name(label: str, outtype: str) -> str:
    return f"{label}-{outtype}.gguf"


def _fingerprint(folder: Path) -> list:
    """Return the name, size and mtime of each file in folder: changes when the model does."""
    return sorted(
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in folder.iterdir()
        if p.is_file() and p.suffix != ".gguf"
    )


def _convert(
    folder: Path, label: str, outtype: str, dest: Path, progress: bool, timeout_s: float
) -> None:
    """Run the converter on folder into dest (atomically): the .gguf and deploykit_build.json."""
    from .._progress import progress_bar

    script = converter_path(progress=progress)
    gguf_py = script.parent / "gguf-py"
    bar = progress_bar(
        total=1, desc=f"converting {label} to GGUF {outtype}", unit="file", disable=not progress
    )
    fd, log_name = tempfile.mkstemp(prefix=f"deploykit-gguf-{label}-{outtype}-", suffix=".log")
    os.close(fd)
    log_path = Path(log_name)
    try:
        with building(dest) as tmp:
            out = tmp / _gguf_name(label, outtype)
            command: list[str | os.PathLike[str]] = [
                sys.executable,
                script,
                folder,
                "--outtype",
                outtype,
                "--outfile",
                out,
                "--model-name",
                label,
            ]
            # gguf-py first: the converter and its gguf-py must match; offline: a local folder
            env = {
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(gguf_py), os.environ.get("PYTHONPATH")])
                ),
                "HF_HUB_OFFLINE": "1",
            }
            job = run_job(command, log_path=log_path, timeout_s=timeout_s, env=env)
            problem = (
                f"did not finish in {timeout_s:g} s"
                if job.exit_code is None
                else f"exited with status {job.exit_code}"
                if not job.ok
                else None
                if _is_gguf(out)
                else "reported success but wrote no GGUF file"
            )
            if problem is not None:
                raise ModelBuildError(
                    failure_report(
                        f"llama.cpp's converter {problem} on {folder}",
                        job.command,
                        log_path,
                        "Check the log above first: an architecture the converter does not support, "
                        "missing weights or tokenizer files, or a package it needs. Reproduce it with "
                        f"the command above (PYTHONPATH={shlex.quote(str(gguf_py))}).",
                        exit_code=job.exit_code,
                    )
                )
            shutil.copyfile(log_path, tmp / "convert.log")
            report = {
                "model": label,
                "source_folder": str(folder),
                "outtype": outtype,
                "gguf_file": out.name,
                "size_bytes": out.stat().st_size,
                "convert_seconds": round(job.seconds, 2),
                "converter": {
                    "package": PACKAGE,
                    "version": VERSION,
                    "sha256": SDIST_SHA256,
                    "script": _SCRIPT,
                },
            }
            (tmp / "deploykit_build.json").write_text(json.dumps(report, indent=2))
        log_path.unlink()  # kept only when the conversion failed: the error names it
    finally:
        bar.update()
        bar.close()


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except FileNotFoundError:
        return False


def _by_hand() -> str:
    return (
        f"To fetch it by hand (on any machine with access to PyPI): "
        f"`{shlex.join(pip_command('.'))}`, then "
        f"`export DEPLOYKIT_LLAMACPP_SDIST=$PWD/{SDIST_NAME}` and export again."
    )


def _fetch(dest: Path, progress: bool) -> None:
    """Download (or take DEPLOYKIT_LLAMACPP_SDIST), verify, and extract the converter into dest."""
    from .._progress import progress_bar

    given = _env.llamacpp_sdist()
    bar = progress_bar(
        total=3, desc="fetching llama.cpp's GGUF converter", unit="step", disable=not progress
    )
    try:
        with building(dest) as tmp:
            bar.set_postfix_str("download")
            if given is None:
                sdist = pip_download(
                    pip_command(tmp / ".download"),
                    tmp / ".download",
                    SDIST_NAME,
                    f"{PACKAGE}=={VERSION}, whose source vendors llama.cpp's GGUF converter",
                    _by_hand(),
                )
            elif not given.is_file():
                raise ModelBuildError(
                    f"DEPLOYKIT_LLAMACPP_SDIST points at {given}, which is not a file. {_by_hand()}"
                )
            else:
                sdist = given
            bar.update()
            bar.set_postfix_str("verify")
            digest = _sha256(sdist)
            if digest != SDIST_SHA256:
                fix = (
                    f"Delete {sdist} and fetch it again, or unset DEPLOYKIT_LLAMACPP_SDIST."
                    if given is not None
                    else "The download was damaged; export again."
                )
                raise ModelBuildError(
                    f"{sdist} has sha256 {digest}, not the pinned "
                    f"{SDIST_SHA256}: it is not {SDIST_NAME}, or it is "
                    f"truncated. {fix} {_by_hand()}"
                )
            bar.update()
            bar.set_postfix_str("extract")
            files = _extract(sdist, tmp)
            shutil.rmtree(tmp / ".download", ignore_errors=True)
            report = {
                "package": PACKAGE,
                "version": VERSION,
                "sha256": SDIST_SHA256,
                "vendor_dir": _VENDOR,
                "members": list(_MEMBERS),
                "files": files,
            }
            (tmp / "deploykit_build.json").write_text(json.dumps(report, indent=2))
            bar.update()
    finally:
        bar.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(sdist: Path, out: Path) -> int:
    """Copy the converter's files (regular files under _MEMBERS) from the sdist; return how many."""
    count = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:  # one pass over the stream
            if not member.isfile() or not member.name.startswith(_VENDOR):
                continue
            rel = PurePosixPath(member.name[len(_VENDOR) :])
            if not any(str(rel) == m or str(rel).startswith(m) for m in _MEMBERS):
                continue
            if ".." in rel.parts or rel.is_absolute() or "__pycache__" in rel.parts:
                continue
            target = out.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            reader = tar.extractfile(member)
            assert reader is not None  # member.isfile()
            with reader, open(target, "wb") as writer:
                shutil.copyfileobj(reader, writer, _CHUNK_BYTES)
            count += 1
    if not (out / _SCRIPT).is_file() or not (out / "gguf-py" / "gguf").is_dir():
        raise ModelBuildError(
            f"{sdist} has no {_VENDOR}{_SCRIPT} or gguf-py: not the "
            f"{SDIST_NAME} whose converter deploykit pins. {_by_hand()}"
        )
    return count


def add_cli(sub) -> None:
    """Add `deploykit gguf MODEL [--outtype q8_0]` to the CLI."""
    p = sub.add_parser(
        "gguf", help="convert a model to GGUF with llama.cpp's converter and print the file's path"
    )
    p.add_argument("model", help="a built-in name (e.g. toy-tiny) or a local Hugging Face folder")
    p.add_argument(
        "--outtype",
        default="f16",
        choices=OUTTYPES,
        help="weight type of the GGUF file (default: f16)",
    )
    p.set_defaults(func=_cli_gguf)


def _cli_gguf(args) -> int:
    print(export_gguf(args.model, args.outtype))
    return 0
