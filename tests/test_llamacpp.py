"""deploykit.engines.llamacpp against real llama.cpp servers (xllamacpp) on smollm2-135m's GGUF."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest
from tokenizers import Tokenizer

import deploykit as dk
from deploykit.engines.llamacpp import LAUNCHER, LlamaCppArgs, start_llamacpp, tokenize
from deploykit.errors import EngineArgumentError, ServerStartError, UnknownModelError

MODEL = "smollm2-135m"
# small: one test server shares two cores with the test process
ARGS = LlamaCppArgs(model=MODEL, ctx_size=512, n_parallel=2, threads=2, metrics=True)


# -- arguments and command line --------------------------------------------------------


def test_command_line_carries_each_setting():
    args = LlamaCppArgs(
        model=MODEL,
        alias="smol",
        ctx_size=1024,
        n_parallel=3,
        threads=2,
        n_gpu_layers=0,
        batch_size=256,
        ubatch_size=128,
        metrics=True,
    )
    cmd = args.to_command(host="127.0.0.1", port=8080)
    assert cmd[:3] == [sys.executable, "-m", "deploykit.engines._llamacpp_child"] == list(LAUNCHER)
    assert cmd[3] == "--model" and Path(cmd[4]) == dk.resolve_model(MODEL).gguf_file.resolve()
    assert cmd[5:] == [
        "--alias",
        "smol",
        "--ctx-size",
        "1024",
        "--parallel",
        "3",
        "--threads",
        "2",
        "--n-gpu-layers",
        "0",
        "--batch-size",
        "256",
        "--ubatch-size",
        "128",
        "--metrics",
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
    ]
    assert args.served_name == "smol"


def test_defaults_leave_llama_cpp_its_own():
    cmd = LlamaCppArgs(model=MODEL).to_command()
    assert cmd[-4:] == ["--host", "{host}", "--port", "{port}"]  # filled in by launch_server
    assert cmd[5:11] == ["--alias", MODEL, "--ctx-size", "2048", "--parallel", "4"]
    assert not {"--threads", "--n-gpu-layers", "--batch-size", "--ubatch-size", "--metrics"} & set(
        cmd
    )


def test_a_path_model_is_served_under_the_path_given(tmp_path):
    gguf = dk.resolve_model(MODEL).gguf_file
    args = LlamaCppArgs(model=gguf)  # a Path is kept as a str
    assert args.model == str(gguf) and args.served_name == str(gguf)
    assert args.gguf_path() == gguf.resolve()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"ctx_size": 0}, "ctx_size=0"),
        ({"ctx_size": True}, "ctx_size=True"),
        ({"n_parallel": 0}, "n_parallel=0"),
        ({"ctx_size": 2, "n_parallel": 4}, "raise ctx_size"),
        ({"threads": 0}, "threads=0"),
        ({"batch_size": -1}, "batch_size=-1"),
        ({"n_gpu_layers": -1}, "n_gpu_layers=-1"),
        ({"alias": ""}, "alias=''"),
        ({"model": ""}, "is empty"),
        ({"model": None}, "model=None"),
    ],
)
def test_invalid_arguments_fail_at_construction(changes, message):
    with pytest.raises(EngineArgumentError, match=re.escape(message)):
        LlamaCppArgs(**{"model": MODEL, **changes})


def test_unknown_builtin_fails_before_any_process_starts():
    args = LlamaCppArgs(model="toy-huge")
    with pytest.raises(UnknownModelError, match="toy-huge"):
        start_llamacpp(args)


def test_toy_without_gguf_says_to_convert_it_first():
    with pytest.raises(EngineArgumentError, match=re.escape("dk.export_gguf('toy-tiny')")):
        LlamaCppArgs(model="toy-tiny").gguf_path()


def test_missing_and_non_gguf_files_are_rejected(tmp_path):
    with pytest.raises(UnknownModelError, match="no GGUF file"):
        LlamaCppArgs(model=str(tmp_path / "missing.gguf")).gguf_path()
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(EngineArgumentError, match="not a .gguf file"):
        LlamaCppArgs(model=str(weights)).gguf_path()
    with pytest.raises(EngineArgumentError, match="is a folder"):
        LlamaCppArgs(model=str(tmp_path)).gguf_path()


def test_garbage_gguf_ends_the_server_with_llama_cpp_log(tmp_path):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ServerStartError) as info:
        start_llamacpp(LlamaCppArgs(model=str(bad), ctx_size=256, n_parallel=1), timeout_s=60)
    message = str(info.value)
    assert "exited while starting" in message  # not the health timeout: it did not hang
    assert "invalid magic characters" in message and "failed to load model" in message
    assert "llama.cpp did not start" in message


def test_missing_xllamacpp_is_one_line_saying_what_to_install():
    # the child started with xllamacpp unimportable (None in sys.modules blocks the import)
    code = (
        "import runpy, sys; sys.modules['xllamacpp'] = None; sys.argv[1:] = "
        "['--model', 'x.gguf', '--port', '1']; "
        "runpy.run_module('deploykit.engines._llamacpp_child', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "pip install xllamacpp" in done.stderr


# -- a real llama.cpp server -----------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with start_llamacpp(ARGS, timeout_s=120) as srv:
        yield srv


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60, max_retries=0)


def test_models_lists_the_alias(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_completion_through_openai_sdk(client):
    chat = client.chat.completions.create(
        model=MODEL,
        max_tokens=24,
        temperature=0,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
    )
    text = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant"
    assert 1 <= chat.usage.completion_tokens <= 24
    assert len(re.findall(r"\b[a-z]+\b", text.lower())) >= 5 and text.isascii(), text
    # the chat template was applied: the answer is about the question
    assert re.search(r"sky|blue|light|scatter", text.lower()), text


def test_streamed_chat_arrives_in_pieces(client):
    stream = client.chat.completions.create(
        model=MODEL,
        max_tokens=16,
        temperature=0,
        stream=True,
        messages=[{"role": "user", "content": "Name three colours."}],
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 5 and "".join(pieces).strip()


def test_tokenize_matches_the_hugging_face_tokenizer(server):
    text = "Deploy a model, then measure it."
    ids = tokenize(server.url, text, add_special=False)
    folder = dk.resolve_model(MODEL).folder
    assert (
        ids
        == Tokenizer.from_file(str(folder / "tokenizer.json"))
        .encode(text, add_special_tokens=False)
        .ids
    )
    assert tokenize(server.url + "/v1", text) == ids  # SmolLM2's GGUF adds no BOS


def test_metrics_count_generated_tokens(client, server):
    before = dk.scrape_metrics(server.url).value("llamacpp:tokens_predicted")
    client.completions.create(
        model=MODEL,
        prompt="The sky is",
        max_tokens=4,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert dk.scrape_metrics(server.url).value("llamacpp:tokens_predicted") == before + 4


def test_sigterm_stops_an_idle_server_cleanly():
    srv = start_llamacpp(ARGS.replace(n_parallel=1, ctx_size=128, metrics=False), timeout_s=120)
    assert srv.stop(timeout_s=10) == 0
    assert "stopped" in srv.log_tail(5)


def test_sigterm_cuts_off_a_request_still_generating():
    srv = start_llamacpp(ARGS.replace(n_parallel=1, ctx_size=512, metrics=False), timeout_s=120)
    first_chunk = threading.Event()

    def stream_long_answer():
        body = {
            "model": MODEL,
            "prompt": "Once upon a time",
            "max_tokens": 400,
            "stream": True,
            "ignore_eos": True,
        }
        try:
            with httpx.stream(
                "POST", srv.url + "/v1/completions", json=body, trust_env=False, timeout=60
            ) as response:
                for _ in response.iter_lines():
                    first_chunk.set()
        except httpx.HTTPError:
            pass  # the server went away mid-stream, as it should

    reader = threading.Thread(target=stream_long_answer, daemon=True)
    reader.start()
    assert first_chunk.wait(60)
    # llama.cpp's shutdown may wait ~30 s for the request: the child then ends itself after
    # its grace period (SIGALRM), well before launch's SIGKILL (-9) at the deadline
    assert srv.stop(timeout_s=20) in (0, -signal.SIGALRM)
    assert "stopping" in srv.log_tail()
    reader.join(30)
    assert not reader.is_alive()
