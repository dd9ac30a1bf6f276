"""deploykit.engines.tgi: TGI's docker command, Compose service, checks, and the vLLM translation.

No Docker engine or GPU is needed: the renderings are checked field by field, and
`start_tgi` runs against stand-in `docker` and `nvidia-smi` executables on PATH (a real
process that serves /health), which is what start_tgi sees of them.
"""

from __future__ import annotations

import inspect
import json
import os
import stat
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml

import deploykit as dk
from deploykit.engines.tgi import (
    IMAGE,
    QUANTIZE,
    TGIArgs,
    openai_equivalent,
    start_tgi,
    tgi_runnable,
)
from deploykit.errors import EngineArgumentError, InvalidArgumentError, ServerStartError
from deploykit.launch import free_port

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SECRET = "secret-value"


def _after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


# -- docker run ----------------------------------------------------------------------------


def test_default_docker_command_is_the_documented_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = TGIArgs(model=MODEL).docker_command()
    assert cmd == [
        "docker",
        "run",
        "--gpus",
        "all",
        "--shm-size",
        "1g",
        "-p",
        "8080:80",
        "-v",
        f"{tmp_path / 'data'}:/data",
        "-e",
        "HF_TOKEN",
        IMAGE,
        "--model-id",
        MODEL,
    ]
    assert IMAGE.startswith("ghcr.io/huggingface/text-generation-inference:3.")


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("quantize", "bitsandbytes-nf4", ["--quantize", "bitsandbytes-nf4"]),
        ("max_input_tokens", 1024, ["--max-input-tokens", "1024"]),
        ("max_total_tokens", 2048, ["--max-total-tokens", "2048"]),
        ("max_batch_prefill_tokens", 4096, ["--max-batch-prefill-tokens", "4096"]),
        ("max_concurrent_requests", 64, ["--max-concurrent-requests", "64"]),
        ("num_shard", 2, ["--num-shard", "2"]),
    ],
)
def test_each_launcher_argument_becomes_its_flag_after_the_image(field, value, expected):
    args = TGIArgs(model=MODEL, **{field: value})
    cmd = args.docker_command()
    after_image = cmd[cmd.index(IMAGE) + 1 :]
    assert after_image == ["--model-id", MODEL, *expected]
    assert args.launcher_args() == after_image


def test_host_settings_go_before_the_image(tmp_path):
    args = TGIArgs(
        model=MODEL,
        port=9090,
        volume=tmp_path / "hub",
        shm_size="2g",
        image="ghcr.io/huggingface/text-generation-inference:3.3.5",
    )
    cmd = args.docker_command()
    assert cmd.index("ghcr.io/huggingface/text-generation-inference:3.3.5") == 12
    assert _after(cmd, "-p") == "9090:80"
    assert _after(cmd, "-v") == f"{tmp_path / 'hub'}:/data"
    assert _after(cmd, "--shm-size") == "2g"
    assert _after(cmd, "--gpus") == "all"
    assert _after(cmd, "-e") == "HF_TOKEN"  # by name: docker copies it from the environment


def test_shell_command_writes_a_relative_volume_from_pwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = TGIArgs(model=MODEL, volume="deploy/04_tgi/data").shell_command()
    assert ' -v "$PWD/deploy/04_tgi/data":/data ' in line
    assert str(tmp_path) not in line and line.startswith("docker run --gpus all")
    absolute = TGIArgs(model=MODEL, volume="/srv/hub").shell_command()
    assert " -v /srv/hub:/data " in absolute


def test_serve_args_give_the_stand_in_the_same_limits():
    args = TGIArgs(
        model=MODEL, max_input_tokens=1024, max_total_tokens=2048, max_concurrent_requests=128
    )
    assert args.serve_args() == [
        "--max-input-tokens",
        "1024",
        "--max-total-tokens",
        "2048",
        "--max-concurrent-requests",
        "128",
    ]
    assert TGIArgs(model=MODEL).serve_args() == []


def test_write_compose_puts_the_volume_relative_to_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = TGIArgs(model=MODEL, volume="deploy/04_tgi/data")
    path = args.write_compose("deploy/04_tgi")
    assert path == Path("deploy/04_tgi/compose.yaml")
    service = yaml.safe_load(path.read_text())["services"]["tgi"]
    assert service["volumes"] == ["./data:/data"]
    assert str(tmp_path) not in path.read_text()


def test_to_command_leaves_the_port_for_launch_server():
    cmd = TGIArgs(model=MODEL).to_command()
    assert _after(cmd, "-p") == "{port}:80"


def test_a_container_path_under_data_is_a_model():
    assert (
        _after(TGIArgs(model="/data/my-model").docker_command(), "--model-id") == "/data/my-model"
    )


# -- Compose -------------------------------------------------------------------------------


def test_compose_service_fields():
    args = TGIArgs(
        model=MODEL,
        quantize="awq",
        max_input_tokens=1000,
        max_total_tokens=1512,
        port=8081,
        volume="hub-cache",
    )
    service = args.compose_service()
    assert set(service) == {
        "image",
        "command",
        "ports",
        "volumes",
        "environment",
        "shm_size",
        "deploy",
        "healthcheck",
        "restart",
    }
    assert service["image"] == IMAGE
    assert service["command"] == [
        "--model-id",
        MODEL,
        "--quantize",
        "awq",
        "--max-input-tokens",
        "1000",
        "--max-total-tokens",
        "1512",
    ]
    assert service["ports"] == ["8081:80"]
    assert service["volumes"] == ["./hub-cache:/data"]  # a folder, not a named volume
    assert service["environment"] == {"HF_TOKEN": "${HF_TOKEN}"}
    assert service["shm_size"] == "1g"
    assert service["deploy"] == {
        "resources": {
            "reservations": {
                "devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
            }
        }
    }
    health = service["healthcheck"]
    assert health["test"] == ["CMD", "curl", "-f", "http://localhost:80/health"]
    assert set(health) >= {"interval", "timeout", "retries", "start_period"}
    assert service["restart"] == "unless-stopped"


def test_compose_reserves_num_shard_gpus_and_keeps_absolute_volumes(tmp_path):
    service = TGIArgs(model=MODEL, num_shard=2, volume=tmp_path).compose_service()
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2
    assert service["volumes"] == [f"{tmp_path}:/data"]


def test_compose_yaml_parses_to_the_service():
    args = TGIArgs(model=MODEL, max_input_tokens=1024, max_total_tokens=2048, num_shard=1)
    doc = yaml.safe_load(args.compose_yaml())
    assert list(doc) == ["services"] and list(doc["services"]) == ["tgi"]
    assert doc["services"]["tgi"] == args.compose_service()
    assert doc["services"]["tgi"]["ports"] == ["8080:80"]  # a string, not a base-60 number
    assert yaml.safe_load(args.compose_yaml(service="llm"))["services"]["llm"]["image"] == IMAGE


def test_the_token_value_never_appears(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    args = TGIArgs(model=MODEL, quantize="eetq", volume=tmp_path)
    renderings = [
        " ".join(args.docker_command()),
        " ".join(args.to_command()),
        args.compose_yaml(),
        json.dumps(args.compose_service()),
        json.dumps(args.to_env()),
        repr(args),
    ]
    for text in renderings:
        assert SECRET not in text
    assert "HF_TOKEN" in renderings[0] and "${HF_TOKEN}" in renderings[2]


# -- bad arguments -------------------------------------------------------------------------


def test_unknown_quantize_lists_the_valid_values():
    with pytest.raises(EngineArgumentError) as info:
        TGIArgs(model=MODEL, quantize="int4")
    message = str(info.value)
    assert "quantize='int4'" in message
    for value in QUANTIZE:
        assert value in message
    assert {
        "bitsandbytes",
        "bitsandbytes-nf4",
        "bitsandbytes-fp4",
        "gptq",
        "awq",
        "eetq",
        "exl2",
        "fp8",
        "marlin",
        "compressed-tensors",
    } == set(QUANTIZE)


@pytest.mark.parametrize("inp, total", [(2048, 2048), (4096, 2048)])
def test_input_not_below_total_is_an_impossible_budget(inp, total):
    with pytest.raises(EngineArgumentError, match="impossible token budget") as info:
        TGIArgs(model=MODEL, max_input_tokens=inp, max_total_tokens=total)
    assert f"max_total_tokens={inp + 512}" in str(info.value)  # says what to set instead


def test_prefill_below_input_is_refused_with_the_fix():
    with pytest.raises(
        EngineArgumentError, match="raise max_batch_prefill_tokens to at least 2048"
    ):
        TGIArgs(
            model=MODEL, max_input_tokens=2048, max_total_tokens=4096, max_batch_prefill_tokens=1024
        )
    TGIArgs(
        model=MODEL, max_input_tokens=2048, max_total_tokens=4096, max_batch_prefill_tokens=2048
    )  # equal is fine


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_input_tokens": 0}, "max_input_tokens"),
        ({"max_total_tokens": -1}, "max_total_tokens"),
        ({"max_batch_prefill_tokens": 1.5}, "max_batch_prefill_tokens"),
        ({"max_concurrent_requests": True}, "max_concurrent_requests"),
        ({"num_shard": 0}, "num_shard"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"image": "ghcr.io/huggingface/text-generation-inference"}, "not pinned"),
        ({"image": "ghcr.io/huggingface/text-generation-inference:latest"}, "not pinned"),
        ({"shm_size": "lots"}, "shm_size"),
        ({"volume": ""}, "volume"),
        ({"quantize": "exl2", "num_shard": 2}, "exl2"),
    ],
)
def test_bad_values_say_what_to_change(kwargs, match):
    with pytest.raises(EngineArgumentError, match=match):
        TGIArgs(model=MODEL, **kwargs)


@pytest.mark.parametrize("model", ["toy-tiny", "smollm2-135m", "my model", ""])
def test_models_a_container_cannot_load_are_refused(model):
    with pytest.raises(EngineArgumentError, match="hub id|empty"):
        TGIArgs(model=model)


def test_digest_pinned_image_and_replace_are_checked():
    digest = "ghcr.io/huggingface/text-generation-inference@sha256:" + "0" * 64
    args = TGIArgs(model=MODEL, image=digest)
    assert digest in args.docker_command()
    with pytest.raises(EngineArgumentError, match="impossible"):
        args.replace(max_input_tokens=10, max_total_tokens=5)


# -- can TGI run here? ---------------------------------------------------------------------


def _tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


DOCKER_OK = "import sys\nif sys.argv[1] == 'info':\n    print('27.1.1')\n"
DOCKER_DOWN = (
    "import sys\nprint('Cannot connect to the Docker daemon at unix:///var/run/"
    "docker.sock', file=sys.stderr)\nsys.exit(1)\n"
)
SMI_GPU = "print('GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)')\n"
SMI_NONE = "import sys\nprint('No devices were found')\nsys.exit(6)\n"


@pytest.mark.parametrize(
    "tools, ok, reason",
    [
        ({}, False, "no `docker` on PATH"),
        ({"docker": DOCKER_DOWN}, False, "Cannot connect to the Docker daemon"),
        ({"docker": DOCKER_OK}, False, "no `nvidia-smi`"),
        ({"docker": DOCKER_OK, "nvidia-smi": SMI_NONE}, False, "lists no GPU"),
        ({"docker": DOCKER_OK, "nvidia-smi": SMI_GPU}, True, "Docker 27.1.1 and 1 GPU(s)"),
    ],
)
def test_tgi_runnable_needs_docker_and_a_gpu(tools, ok, reason, tmp_path, monkeypatch):
    for name, script in tools.items():
        _tool(tmp_path, name, script)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    found, why = tgi_runnable()
    assert found is ok and reason in why, why


def test_tgi_does_not_run_offline_since_it_downloads_its_model(tmp_path, monkeypatch):
    _tool(tmp_path, "docker", DOCKER_OK)
    _tool(tmp_path, "nvidia-smi", SMI_GPU)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found, why = tgi_runnable()
    assert not found and "HF_HUB_OFFLINE=1" in why, why


def test_start_tgi_refuses_with_the_reason(tmp_path, monkeypatch):
    _tool(tmp_path, "docker", DOCKER_DOWN)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        ServerStartError, match="TGI cannot run on this machine: `docker info` failed"
    ):
        start_tgi(TGIArgs(model=MODEL, volume=tmp_path / "data"))
    assert not (tmp_path / "data").exists()  # nothing started, nothing created


# a stand-in `docker run`: records what it was given, serves /health on the published port
FAKE_DOCKER = """\
import http.server, json, os, sys
if sys.argv[1] == "info":
    print("27.1.1")
    sys.exit(0)
argv = sys.argv[1:]
port = int(argv[argv.index("-p") + 1].split(":")[0])
with open(os.environ["DK_FAKE_DOCKER_LOG"], "w") as f:
    json.dump({"argv": argv, "token_seen": os.environ.get("HF_TOKEN")}, f)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_start_tgi_runs_the_container_command_and_waits_for_health(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "docker", FAKE_DOCKER)
    _tool(bin_dir, "nvidia-smi", SMI_GPU)
    log = tmp_path / "docker-run.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # TGI runs only where it may download its model
    monkeypatch.setenv("DK_FAKE_DOCKER_LOG", str(log))
    args = TGIArgs(
        model=MODEL,
        port=free_port(),
        volume=tmp_path / "data",
        max_input_tokens=64,
        max_total_tokens=128,
    )
    with start_tgi(args, timeout_s=60) as server:
        assert server.url.endswith(f":{args.port}")
        assert httpx.get(server.url + "/health", trust_env=False).status_code == 200
        seen = json.loads(log.read_text())
    assert not server.is_running()
    assert seen["argv"][:2] == ["run", "--rm"]
    assert seen["argv"][2:] == args.docker_command()[2:]
    assert SECRET not in " ".join(seen["argv"]) + " ".join(server.command)
    assert seen["token_seen"] == SECRET  # reached the process by name, through the environment
    assert (tmp_path / "data").is_dir()


# -- TGI parameters -> vLLM's OpenAI completions call --------------------------------------


@pytest.mark.parametrize(
    "parameters, expected",
    [
        ({}, {"max_tokens": None, "temperature": 0.0}),
        ({"max_new_tokens": 20, "do_sample": False}, {"max_tokens": 20, "temperature": 0.0}),
        ({"do_sample": True}, {"max_tokens": None, "temperature": 1.0}),
        (
            {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "seed": 3},
            {
                "max_tokens": None,
                "temperature": 0.7,
                "top_p": 0.9,
                "seed": 3,
                "extra_body": {"top_k": 50},
            },
        ),
        # as in TGI, a sampling setting turns sampling on without do_sample ...
        ({"temperature": 0.5}, {"max_tokens": None, "temperature": 0.5}),
        ({"top_k": 10}, {"max_tokens": None, "temperature": 1.0, "extra_body": {"top_k": 10}}),
        # ... but temperature 1.0 alone changes nothing, so TGI stays greedy
        ({"temperature": 1.0}, {"max_tokens": None, "temperature": 0.0}),
        (
            {"stop": ["\n\n", "User:"], "repetition_penalty": 1.2, "frequency_penalty": 0.5},
            {
                "max_tokens": None,
                "temperature": 0.0,
                "stop": ["\n\n", "User:"],
                "frequency_penalty": 0.5,
                "extra_body": {"repetition_penalty": 1.2},
            },
        ),
        (
            {"truncate": 100, "return_full_text": True, "top_n_tokens": 3, "details": True},
            {
                "max_tokens": None,
                "temperature": 0.0,
                "echo": True,
                "logprobs": 3,
                "extra_body": {"truncate_prompt_tokens": 100, "truncation_side": "left"},
            },
        ),
        (
            {"grammar": {"type": "json", "value": {"type": "object"}}},
            {
                "max_tokens": None,
                "temperature": 0.0,
                "extra_body": {"structured_outputs": {"json": {"type": "object"}}},
            },
        ),
        (
            {"grammar": {"type": "regex", "value": "[0-9]+"}},
            {
                "max_tokens": None,
                "temperature": 0.0,
                "extra_body": {"structured_outputs": {"regex": "[0-9]+"}},
            },
        ),
        (
            {
                "grammar": {
                    "type": "json_schema",
                    "value": {"name": "x", "schema": {"type": "string"}},
                }
            },
            {
                "max_tokens": None,
                "temperature": 0.0,
                "extra_body": {"structured_outputs": {"json": {"type": "string"}}},
            },
        ),
        # huggingface_hub sends nulls, and defaults that ask for nothing
        (
            {
                "max_new_tokens": 5,
                "temperature": None,
                "watermark": False,
                "best_of": None,
                "typical_p": None,
                "decoder_input_details": False,
                "top_n_tokens": None,
            },
            {"max_tokens": 5, "temperature": 0.0},
        ),
    ],
)
def test_openai_equivalent(parameters, expected):
    assert openai_equivalent(parameters) == expected


def test_the_kwargs_are_what_the_openai_sdk_sends_to_vllm():
    accepted = set(inspect.signature(openai.OpenAI(api_key="x").completions.create).parameters)
    kwargs = openai_equivalent(
        {
            "max_new_tokens": 8,
            "temperature": 0.3,
            "top_p": 0.8,
            "top_k": 5,
            "stop": ["."],
            "seed": 1,
            "repetition_penalty": 1.1,
            "truncate": 50,
            "top_n_tokens": 2,
        }
    )
    assert set(kwargs) <= accepted
    bodies = []

    def reply(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "id": "c",
                "object": "text_completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "text": "x", "finish_reason": "stop"}],
            },
        )

    client = openai.OpenAI(
        api_key="x",
        base_url="http://vllm.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(reply)),
    )
    client.completions.create(model="m", prompt="Hi", **kwargs)
    body = bodies[0]
    # vLLM reads extra_body's keys at the top level of the JSON, beside OpenAI's own
    assert body == {
        "model": "m",
        "prompt": "Hi",
        "max_tokens": 8,
        "temperature": 0.3,
        "top_p": 0.8,
        "stop": ["."],
        "seed": 1,
        "logprobs": 2,
        "top_k": 5,
        "repetition_penalty": 1.1,
        "truncate_prompt_tokens": 50,
        "truncation_side": "left",
    }


@pytest.mark.parametrize(
    "parameters, match",
    [
        ({"max_tokens": 5}, "unknown TGI parameter.*max_new_tokens"),
        ({"typical_p": 0.9}, "typical_p=0.9 has no vLLM equivalent"),
        ({"watermark": True}, "watermark"),
        ({"best_of": 2}, "best_of"),
        ({"decoder_input_details": True}, "prompt_logprobs"),
        ({"adapter_id": "my-lora"}, "lora-modules"),
        ({"temperature": 0}, "temperature=0 must be > 0"),
        ({"top_p": 1.0}, r"top_p=1.0 must be in \(0, 1\)"),
        ({"top_k": 0}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"repetition_penalty": -1}, "repetition_penalty"),
        ({"temperature": "hot"}, "finite number"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"stop": "\n"}, "list of non-empty strings"),
        ({"grammar": {"type": "ebnf", "value": "x"}}, "grammar"),
    ],
)
def test_openai_equivalent_refuses_what_it_cannot_translate(parameters, match):
    with pytest.raises(InvalidArgumentError, match=match):
        openai_equivalent(parameters)


def test_exported_from_deploykit():
    assert dk.TGIArgs is TGIArgs and dk.start_tgi is start_tgi
    assert dk.tgi_runnable is tgi_runnable and dk.openai_equivalent is openai_equivalent
    assert {"TGIArgs", "start_tgi", "tgi_runnable", "openai_equivalent"} <= set(dk.__all__)
