"""Ollama from a GGUF file: a Modelfile whose TEMPLATE is the model's own chat template.

`modelfile` writes FROM (the GGUF: its absolute path, or a name relative to the Modelfile
when the GGUF is placed beside it), TEMPLATE (Go template syntax), SYSTEM and PARAMETER lines; `create_command` is the `ollama create NAME -f Modelfile` that
imports it; the TEMPLATE is `models.templates.go_template`'s conversion. Quoting
follows Ollama's parser (parser/parser.go): values are read up to the newline that closes
their quotes, so text holding three double quotes in a row cannot be written. Nothing here
runs Ollama's server or pulls models.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..models.templates import go_template

# PARAMETER names and value types: the json tags of Ollama's api.Options and api.Runner
# (api/types.go), which `ollama create` checks (api.FormatParams). mirostat*, use_mlock,
# low_vram, f16_kv and vocab_only went in Ollama 0.6.9 (#10574, #10581), tfs_z and
# penalize_newline in 0.5.x; draft_num_predict needs Ollama 0.30 or later.
PARAMETERS: dict[str, type] = {
    "num_ctx": int,
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "use_mmap": bool,
    "num_thread": int,
    "draft_num_predict": int,
    "num_keep": int,
    "seed": int,
    "num_predict": int,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "typical_p": float,
    "repeat_last_n": int,
    "temperature": float,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "stop": list,
}
_GGUF_MAGIC = b"GGUF"


def _check_gguf(gguf: str | Path) -> Path:
    """Return the absolute path of an existing GGUF file, or say how to get one."""
    how = (
        "For a built-in model use resolve_model(name).gguf_file (smollm2-135m ships one); "
        "for a toy model export one with dk.export_gguf(name); for another Hugging Face "
        "model convert it with llama.cpp's convert_hf_to_gguf.py."
    )
    path = Path(gguf).expanduser().absolute()
    if path.suffix.lower() != ".gguf":
        raise InvalidArgumentError(
            f"{str(gguf)!r} is not a .gguf file; Ollama's FROM takes a GGUF file here. {how}"
        )
    if not path.is_file():
        raise InvalidArgumentError(f"GGUF file {str(path)!r} does not exist. {how}")
    with open(path, "rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise InvalidArgumentError(
                f"{str(path)!r} does not start with the GGUF magic bytes; "
                f"it is not a GGUF file. {how}"
            )
    if any(c in str(path) for c in '"\n\r'):
        raise InvalidArgumentError(
            f"{str(path)!r} holds a quote or newline, which a Modelfile's "
            "FROM cannot carry; move or rename the file."
        )
    return path


@dataclass(frozen=True)
class _GGUFInfo:
    chat_template: str | None
    bos_token: str
    eos_token: str
    add_bos_token: bool


def _gguf_info(path: Path) -> _GGUFInfo:
    """Read the chat template and special tokens from a GGUF file's metadata."""
    stat = path.stat()
    return _gguf_info_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _gguf_info_cached(path: str, mtime_ns: int, size: int) -> _GGUFInfo:
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def value(key: str, default: Any = None) -> Any:
        field = fields.get(key)
        return field.contents() if field is not None else default

    tokens = fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str:
        index = value(key)
        return tokens.contents(index) if tokens is not None and index is not None else ""

    return _GGUFInfo(
        chat_template=value("tokenizer.chat_template"),
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        add_bos_token=bool(value("tokenizer.ggml.add_bos_token", True)),
    )


def _text_value(what: str, text: str) -> str:
    """Quote text for a Modelfile; refuse what Ollama's parser would cut or drop."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"{what} must be a string, not {type(text).__name__}.")
    if '"""' in text:
        raise InvalidArgumentError(
            f'{what} contains """, which ends a quoted Modelfile value '
            "early; rewrite it without three double quotes in a row."
        )
    bad = sorted({repr(c) for c in text if not c.isprintable() and c not in "\n\t"})
    if bad:
        raise InvalidArgumentError(
            f"{what} contains control characters {', '.join(bad)}, "
            "which Ollama's Modelfile parser drops; remove them."
        )
    return f'"""{text}"""' if '"' in text or "\n" in text else f'"{text}"'


def _parameter_lines(parameters: Mapping[str, Any]) -> list[str]:
    """Return PARAMETER lines, checked against Ollama's names and value types."""
    if not isinstance(parameters, Mapping):
        raise InvalidArgumentError(
            "parameters must be a dict such as {'temperature': 0.2, 'stop': ['<|im_end|>']}."
        )
    lines = []
    for name, value in parameters.items():
        kind = PARAMETERS.get(name)
        if kind is None:
            raise InvalidArgumentError(
                f"{name!r} is not an Ollama parameter; use one of: {', '.join(PARAMETERS)}."
            )
        if kind is list:
            stops = [value] if isinstance(value, str) else value
            if (
                not isinstance(stops, (list, tuple))
                or not stops
                or not all(isinstance(s, str) and s for s in stops)
            ):
                raise InvalidArgumentError(
                    f"stop={value!r} must be a non-empty string or a list "
                    "of them (each becomes its own PARAMETER stop line)."
                )
            lines += [f"PARAMETER stop {_text_value('stop', s)}" for s in stops]
        elif kind is bool:
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"{name}={value!r} must be True or False.")
            lines.append(f"PARAMETER {name} {str(value).lower()}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(f"{name}={value!r} must be an integer.")
            lines.append(f"PARAMETER {name} {value}")
        else:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise InvalidArgumentError(f"{name}={value!r} must be a finite number.")
            lines.append(f"PARAMETER {name} {float(value)!r}")
    return lines


def modelfile(
    gguf: str | Path,
    *,
    template: str | None = None,
    chat_template: str | None = None,
    system: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    from_name: str | None = None,
) -> str:
    """Return a Modelfile: FROM the GGUF file, TEMPLATE, SYSTEM and PARAMETER lines.

    template is Go template text used as given; chat_template is a Jinja chat template,
    converted by `go_template` (its family's stop strings are added unless parameters set
    stop). With neither, no TEMPLATE is written and Ollama guesses one from the GGUF.
    from_name is what FROM says instead of the absolute path, e.g. "./model.gguf" for a GGUF
    beside the Modelfile (`ollama create` reads a relative FROM from the Modelfile's folder).
    """
    path = _check_gguf(gguf)
    if from_name is not None and (not from_name.strip() or any(c in from_name for c in '"\n\r')):
        raise InvalidArgumentError(
            f"from_name={from_name!r} cannot follow FROM; give a path without quotes or "
            "newlines, e.g. './model.gguf'."
        )
    if template is not None and chat_template is not None:
        raise InvalidArgumentError(
            "pass template= (Go syntax, used as is) or chat_template= (Jinja, converted), not both."
        )
    params = dict(parameters or {})
    lines = [
        "# Modelfile written by deploykit; import it with: ollama create NAME -f <this file>",
        f"FROM {from_name or path}",
    ]
    if chat_template is not None:
        needs_tokens = "bos_token" in chat_template or "eos_token" in chat_template
        info = _gguf_info(path) if needs_tokens else _GGUFInfo(None, "", "", True)
        converted = go_template(
            chat_template,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
            add_bos_token=info.add_bos_token,
        )
        template = converted.text
        params.setdefault("stop", list(converted.stops))
    if template is not None:
        if not template.strip():
            raise InvalidArgumentError(
                "template is empty; pass Go template text such as "
                "'{{ .Prompt }}', or leave it None."
            )
        lines.append(f"TEMPLATE {_text_value('template', template)}")
    if system is not None:
        lines.append(f"SYSTEM {_text_value('system', system)}")
    lines += _parameter_lines(params)
    return "\n".join(lines) + "\n"


def write_modelfile(
    model_or_gguf: Any,
    path: str | Path,
    *,
    system: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    gguf_beside: bool = False,
) -> Path:
    """Write the Modelfile of a model (its GGUF and converted chat template) to path.

    model_or_gguf is a .gguf file, or a model `resolve_model` knows whose GGUF it has
    (smollm2-135m; a folder holding one). The chat template and special tokens are read
    from the GGUF itself, the file Ollama loads. A folder (existing, or given with a
    trailing slash) gets path/Modelfile. Returns the file written.

    gguf_beside=True puts the GGUF in the Modelfile's folder too (a hard link where the
    filesystem allows one, else a copy) and names it relative to the Modelfile, so the
    folder holds no path of this machine and can be moved or copied as it is.
    """
    gguf = _find_gguf(model_or_gguf)
    info = _gguf_info(gguf)
    if not info.chat_template:
        raise InvalidArgumentError(
            f"{str(gguf)!r} carries no tokenizer.chat_template; write the "
            "Go template yourself and call modelfile(gguf, template=...)."
        )
    out = Path(path).expanduser()
    if out.is_dir() or str(path).endswith(("/", os.sep)):
        out = out / "Modelfile"
    text = modelfile(
        gguf,
        chat_template=info.chat_template,
        system=system,
        parameters=parameters,
        from_name=f"./{gguf.name}" if gguf_beside else None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if gguf_beside:
        _place(gguf, out.parent / gguf.name)
    out.write_text(text)
    return out


def _place(source: Path, target: Path) -> None:
    """Put source at target: a hard link where possible, else a copy (atomic; kept if same)."""
    if target.exists() and os.path.samefile(source, target):
        return
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another filesystem, or links not allowed: copy the bytes
        shutil.copyfile(source, partial)
    os.replace(partial, target)


def _find_gguf(model_or_gguf: Any) -> Path:
    """Return the GGUF file of a path or model, or say how to make one."""
    from ..models import ModelSource, resolve_model
    from ..models.toy import TOY_MODELS

    if not isinstance(model_or_gguf, ModelSource) and str(model_or_gguf).lower().endswith(".gguf"):
        return _check_gguf(model_or_gguf)
    source = resolve_model(model_or_gguf, progress=False)
    if source.gguf_file is not None:
        return _check_gguf(source.gguf_file)
    found = sorted(source.folder.glob("*.gguf")) if source.folder is not None else []
    if found:
        return _check_gguf(found[0])
    if source.name in TOY_MODELS:
        how = (
            f"export one with dk.export_gguf({source.name!r}) and pass the file it returns: "
            f"write_modelfile(dk.export_gguf({source.name!r}), path)"
        )
    else:
        how = "convert it with llama.cpp's convert_hf_to_gguf.py and pass the .gguf file"
    raise InvalidArgumentError(
        f"model {source.name!r} has no GGUF file, which Ollama needs; {how}."
    )


def ollama_available(timeout_s: float = 10.0) -> tuple[bool, str]:
    """Return (True, version) when the `ollama` binary runs here, else (False, why)."""
    binary = shutil.which("ollama")
    if binary is None:
        return False, "no `ollama` on PATH: install it from https://ollama.com/download"
    try:
        done = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`ollama --version` failed: {type(exc).__name__}: {exc}"
    text = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        return False, f"`ollama --version` exited {done.returncode}: {text[-300:]}"
    # without a server it still exits 0 and says so; `ollama create` needs `ollama serve`
    return True, " ".join(text.split())


def create_command(name: str, modelfile_path: str | Path) -> list[str]:
    """Return `ollama create NAME -f MODELFILE`, which imports the model into Ollama."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.\-/:]*", name):
        raise InvalidArgumentError(
            f"model name {name!r} is not one Ollama accepts; use letters, "
            "digits, '-', '_', '.', optionally a ':tag', e.g. 'smollm2-dk'."
        )
    return ["ollama", "create", name, "-f", str(modelfile_path)]
