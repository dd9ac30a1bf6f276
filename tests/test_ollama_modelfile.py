"""deploykit.engines.ollama: Modelfiles whose Go template renders what the model's Jinja does.

Ollama itself does not run here, so two small ports stand in for it, each kept to what the
tests use: `go_render` executes the Go text/template subset our templates use (range,
if/else if, eq/ne/and, fields, trim markers), with .Messages as Ollama passes them (the
Modelfile's SYSTEM first when the chat has none); `parse_modelfile` is Ollama's Modelfile
parser (parser/parser.go: ParseFile, parseRuneForState, unquote), so quoting is checked by
reading the file back the way `ollama create` does. The Jinja side is the real tokenizer's
apply_chat_template (smollm2-135m's ChatML, toy-tiny's [INST] template).
"""

from __future__ import annotations

import re
import stat
import sys
from pathlib import Path

import pytest

import deploykit as dk
from deploykit.engines.ollama import (
    PARAMETERS,
    create_command,
    go_template,
    modelfile,
    ollama_available,
    write_modelfile,
)
from deploykit.errors import InvalidArgumentError
from deploykit.models.toy import CHAT_TEMPLATE as TOY_TEMPLATE

# Ollama's own ChatML template: template/chatml.gotmpl in github.com/ollama/ollama
OLLAMA_CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
CHATML_PLAIN = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] "
    "+ '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# looks like ChatML, but drops system messages: must not be mistaken for it
CHATML_NO_SYSTEM = CHATML_PLAIN.replace(
    "{{'<|im_start|>'", "{% if message['role'] != 'system' %}{{'<|im_start|>'"
).replace("}}{% endfor %}", "}}{% endif %}{% endfor %}")
CONVERSATIONS = [
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    [{"role": "user", "content": "Hi there"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Bye\nnow"},
    ],
]


# -- a Go text/template subset ---------------------------------------------------------------

_ACTION = re.compile(r"\{\{(- )?\s*(.*?)\s*( -)?\}\}", re.S)
_GO_SPACE = " \t\r\n"


def _go_tokens(template: str) -> list[tuple[str, str]]:
    parts: list[list] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        parts.append(["text", text.rstrip(_GO_SPACE) if m.group(1) else text])
        parts.append(["action", m.group(2), bool(m.group(3))])
        pos = m.end()
    parts.append(["text", template[pos:]])
    for i, part in enumerate(parts):
        if part[0] == "action" and part[2]:
            parts[i + 1][1] = parts[i + 1][1].lstrip(_GO_SPACE)
    return [(p[0], p[1]) for p in parts]


def _go_parse(tokens, i=0):
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
        elif value == "end" or value == "else" or value.startswith("else if "):
            return nodes, i
        elif value.startswith("range "):
            m = re.fullmatch(r"range (?:\$(\w+), \$\w* := )?\.Messages", value)
            assert m, value
            body, i = _go_parse(tokens, i + 1)
            assert tokens[i][1] == "end"
            nodes.append(("range", m.group(1), body))
            i += 1
        elif value.startswith("if "):
            branches, cond = [], value[3:]
            while True:
                body, i = _go_parse(tokens, i + 1)
                branches.append((cond, body))
                if tokens[i][1] == "end":
                    break
                cond = "true" if tokens[i][1] == "else" else tokens[i][1][len("else if ") :]
            nodes.append(("if", branches))
            i += 1
        else:
            nodes.append(("expr", value))
            i += 1
    return nodes, i


_FUNCS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "not": lambda a: not a,
    "and": lambda *a: all(a),
    "or": lambda *a: any(a),
}


def _go_operand(tokens, dot, variables):
    token, rest = tokens[0], tokens[1:]
    if token == "(":
        value, rest = _go_pipeline(rest, dot, variables)
        assert rest[0] == ")"
        return value, rest[1:]
    if token.startswith('"'):
        return token[1:-1], rest
    if token.isdigit():
        return int(token), rest
    if token.startswith("$"):
        return variables[token[1:]], rest
    assert token.startswith("."), token
    return dot[token[1:]], rest


def _go_pipeline(tokens, dot, variables):
    if tokens[0] in _FUNCS:
        args, rest = [], tokens[1:]
        while rest and rest[0] != ")":
            value, rest = _go_operand(rest, dot, variables)
            args.append(value)
        return _FUNCS[tokens[0]](*args), rest
    return _go_operand(tokens, dot, variables)


def _go_exec(nodes, data, dot, variables) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            tokens = re.findall(r'\(|\)|"[^"]*"|[^\s()]+', node[1])
            out.append(str(_go_pipeline(tokens, dot, variables)[0]))
        elif node[0] == "range":
            for index, message in enumerate(data["Messages"]):
                inner = dict(variables, **({node[1]: index} if node[1] else {}))
                out.append(_go_exec(node[2], data, message, inner))
        else:
            for cond, body in node[1]:
                tokens = re.findall(r'\(|\)|"[^"]*"|[^\s()]+', cond)
                if cond == "true" or _go_pipeline(tokens, dot, variables)[0]:
                    out.append(_go_exec(body, data, dot, variables))
                    break
    return "".join(out)


def go_render(template: str, messages: list[dict], system: str | None = None) -> str:
    """Render a Go template for a chat as Ollama does (a Modelfile SYSTEM leads a chat without one)."""
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    ollama_messages = [{"Role": m["role"], "Content": m["content"]} for m in messages]
    data = {
        "Messages": ollama_messages,
        "System": "\n\n".join(m["content"] for m in messages if m["role"] == "system"),
    }
    nodes, end = _go_parse(_go_tokens(template))
    assert end == len(_go_tokens(template)), "unbalanced {{ end }}"
    return _go_exec(nodes, data, data, {})


def test_the_go_renderer_runs_ollamas_own_chatml_template():
    assert go_render(OLLAMA_CHATML, CONVERSATIONS[1]) == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )


# -- Ollama's Modelfile parser -----------------------------------------------------------------

_COMMANDS = {
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
}


def _unquote(s: str) -> tuple[str, bool]:
    if s[:3] == '"""':
        return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
    if s[:1] == '"':
        return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
    return s, True


def _next_state(r: str, state: str) -> tuple[str, str | None]:
    space, newline = r in " \t", r in "\r\n"
    if state == "nil":
        return ("comment", None) if r == "#" else ("nil", None) if space or newline else ("name", r)
    if state == "name":
        assert r.isascii() and (r.isalpha() or space), f"invalid command character {r!r}"
        return ("name", r) if r.isalpha() else ("value", None)
    if state == "value":
        return ("nil", r) if newline or space else ("value", r)
    if state == "parameter":
        assert r.isalnum() or r == "_" or space, f"invalid parameter character {r!r}"
        return ("parameter", r) if not space else ("value", None)
    return ("nil", None) if newline else ("comment", None)


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """Return (command, argument) pairs as Ollama's parser.ParseFile reads a Modelfile."""
    commands, state, buf, name = [], "nil", "", ""
    for r in text:
        nxt, keep = _next_state(r, state)
        if nxt != state:
            if state == "name":
                word = buf.lower()
                assert word in _COMMANDS, word
                if word == "parameter":
                    nxt = "parameter"
                else:
                    name = "model" if word == "from" else word
            elif state == "parameter":
                name = buf
            elif state == "value":
                value, ok = _unquote(buf.strip())
                if not ok or r in " \t":
                    buf += r
                    continue
                commands.append((name, value))
            buf, state = "", nxt
        if keep is not None and keep.isprintable():
            buf += keep
    if state == "value":
        value, ok = _unquote(buf.strip())
        assert ok, "unexpected end of file"
        commands.append((name, value))
    assert state in ("nil", "comment", "value")
    return commands


# -- GGUF files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_source():
    return dk.resolve_model("smollm2-135m", progress=False)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_source):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_source.folder)


@pytest.fixture(scope="module")
def toy_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dk.resolve_model("toy-tiny", progress=False).folder)


def metadata_gguf(path: Path, chat_template: str | None, add_bos_token: bool = True) -> Path:
    """Write a GGUF file holding only tokenizer metadata (what the Modelfile reads), no weights."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(add_bos_token)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def toy_gguf(tmp_path) -> Path:
    return metadata_gguf(tmp_path / "toy-tiny.gguf", TOY_TEMPLATE)


# -- the Go templates render what the Jinja templates render ----------------------------------


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chatml_go_template_matches_smollm2s_jinja(messages, smollm2_tokenizer):
    converted = go_template(smollm2_tokenizer.chat_template)
    assert converted.family == "chatml"
    assert converted.default_system == (
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    jinja = smollm2_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert go_render(converted.text, messages) == jinja


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chatml_writes_no_extra_bos_when_bos_is_im_start(messages, smollm2_tokenizer):
    # smollm2's BOS token is <|im_start|>, which its ChatML template writes in every turn:
    # even when the runtime adds no BOS, the Go template must not write one more
    tok = smollm2_tokenizer
    converted = go_template(
        tok.chat_template, bos_token=tok.bos_token, eos_token=tok.eos_token, add_bos_token=False
    )
    assert go_render(converted.text, messages) == tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def test_chatml_system_from_the_modelfile_replaces_the_default(smollm2_tokenizer):
    text = go_template(smollm2_tokenizer.chat_template).text
    chat = [{"role": "user", "content": "Hi"}]
    expected = smollm2_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *chat],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert go_render(text, chat, system="Be brief.") == expected
    assert "SmolLM" not in expected


def test_chatml_without_a_default_system_is_ollamas_own_template():
    converted = go_template(CHATML_PLAIN)
    assert converted.text == OLLAMA_CHATML
    assert converted.stops == ("<|im_start|>", "<|im_end|>")


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_toy_inst_go_template_matches_the_toys_jinja(messages, toy_tokenizer):
    assert toy_tokenizer.chat_template == TOY_TEMPLATE
    bos, eos = toy_tokenizer.bos_token, toy_tokenizer.eos_token
    jinja = toy_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # the runtime adds BOS when the GGUF says add_bos_token: the template then leaves it out
    added = go_template(TOY_TEMPLATE, bos_token=bos, eos_token=eos, add_bos_token=True)
    assert added.family == "inst" and added.default_system is None
    assert bos + go_render(added.text, messages) == jinja
    written = go_template(TOY_TEMPLATE, bos_token=bos, eos_token=eos, add_bos_token=False)
    assert go_render(written.text, messages) == jinja
    assert added.stops == ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")


@pytest.mark.parametrize(
    "template",
    [
        LLAMA3,
        CHATML_NO_SYSTEM,
        "{{ messages[0]['content'] }}",
        "{% for m in messages %}{{ m.nope.deeper }}{% endfor %}",
        "{% if %}",
    ],
)
def test_an_unrecognised_template_says_to_pass_template(template, tmp_path):
    with pytest.raises(
        InvalidArgumentError, match=r"pass it as modelfile\(gguf, template=\.\.\.\)"
    ):
        go_template(template, bos_token="<s>", eos_token="</s>")
    gguf = metadata_gguf(tmp_path / "m.gguf", template)
    with pytest.raises(InvalidArgumentError, match="template="):
        modelfile(gguf, chat_template=template)
    with pytest.raises(InvalidArgumentError, match="template="):
        write_modelfile(gguf, tmp_path / "Modelfile")


# -- the Modelfile, field by field ------------------------------------------------------------


def test_smollm2_modelfile_reads_back_as_written(smollm2_source, smollm2_tokenizer):
    gguf = smollm2_source.gguf_file
    text = modelfile(
        gguf,
        chat_template=smollm2_tokenizer.chat_template,
        system="Be brief.",
        parameters={
            "num_ctx": 2048,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "seed": 7,
            "num_predict": 64,
            "repeat_penalty": 1.1,
            "stop": ["<|im_end|>", "\n\nUser:"],
        },
    )
    assert text.startswith("# ") and text.endswith("\n")
    assert text.splitlines()[1] == f"FROM {gguf.absolute()}"
    commands = parse_modelfile(text)
    assert commands == [
        ("model", str(gguf.absolute())),
        ("template", go_template(smollm2_tokenizer.chat_template).text),
        ("system", "Be brief."),
        ("num_ctx", "2048"),
        ("temperature", "0.2"),
        ("top_p", "0.9"),
        ("top_k", "40"),
        ("seed", "7"),
        ("num_predict", "64"),
        ("repeat_penalty", "1.1"),
        ("stop", "<|im_end|>"),
        ("stop", "\n\nUser:"),  # stop repeats, one line each
    ]


def test_the_family_stops_are_added_unless_stop_is_given(smollm2_source, smollm2_tokenizer):
    gguf, template = smollm2_source.gguf_file, smollm2_tokenizer.chat_template
    default = parse_modelfile(modelfile(gguf, chat_template=template))
    assert [v for k, v in default if k == "stop"] == ["<|im_start|>", "<|im_end|>"]
    own = parse_modelfile(modelfile(gguf, chat_template=template, parameters={"stop": "###"}))
    assert [v for k, v in own if k == "stop"] == ["###"]


def test_template_is_used_as_given_and_nothing_is_added(toy_gguf):
    commands = parse_modelfile(modelfile(toy_gguf, template="{{ .Prompt }}"))
    assert commands == [("model", str(toy_gguf)), ("template", "{{ .Prompt }}")]
    assert parse_modelfile(modelfile(toy_gguf)) == [("model", str(toy_gguf))]


@pytest.mark.parametrize(
    "value",
    ['say "hi" now', "\n", " leading and trailing ", 'ends in "', "tab\there", "<|im_end|>"],
)
def test_awkward_text_survives_ollamas_parser(value, toy_gguf):
    text = modelfile(toy_gguf, system=value, parameters={"stop": [value, "plain"]})
    assert parse_modelfile(text)[1:] == [("system", value), ("stop", value), ("stop", "plain")]


def test_toy_modelfile_from_a_gguf_file(toy_gguf, toy_tokenizer, tmp_path):
    path = write_modelfile(toy_gguf, tmp_path / "out" / "Modelfile", parameters={"num_ctx": 512})
    assert path == tmp_path / "out" / "Modelfile"
    commands = dict(parse_modelfile(path.read_text()))
    assert commands["model"] == str(toy_gguf)
    assert commands["template"] == go_template(TOY_TEMPLATE, bos_token="<s>", eos_token="</s>").text
    assert "</s>" in commands["template"] and not commands["template"].startswith("<s>")
    assert commands["num_ctx"] == "512"
    chat = CONVERSATIONS[0]
    assert toy_tokenizer.bos_token + go_render(
        commands["template"], chat
    ) == toy_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def test_gguf_beside_makes_a_folder_that_holds_no_machine_path(toy_gguf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_modelfile(toy_gguf, "deploy/ollama/", gguf_beside=True)
    assert path == Path("deploy/ollama/Modelfile")
    commands = dict(parse_modelfile(path.read_text()))
    assert commands["model"] == f"./{toy_gguf.name}" and str(tmp_path) not in path.read_text()
    beside = path.parent / toy_gguf.name
    assert beside.read_bytes() == toy_gguf.read_bytes()
    again = write_modelfile(toy_gguf, "deploy/ollama/", gguf_beside=True)  # safe to run twice
    assert again.read_text() == path.read_text() and beside.read_bytes() == toy_gguf.read_bytes()
    assert not list(path.parent.glob(".*partial"))
    with pytest.raises(InvalidArgumentError, match="from_name"):
        modelfile(toy_gguf, from_name='"quoted".gguf')


def test_a_gguf_without_add_bos_gets_bos_in_the_template(tmp_path):
    gguf = metadata_gguf(tmp_path / "nobos.gguf", TOY_TEMPLATE, add_bos_token=False)
    template = dict(parse_modelfile(modelfile(gguf, chat_template=TOY_TEMPLATE)))["template"]
    assert template.startswith("<s>{{- range .Messages }}")


def test_write_modelfile_for_smollm2_by_name(smollm2_source, tmp_path):
    path = write_modelfile("smollm2-135m", f"{tmp_path}/smollm2/", system="Answer in French.")
    assert path == tmp_path / "smollm2" / "Modelfile"
    commands = parse_modelfile(path.read_text())
    assert commands[0] == ("model", str(smollm2_source.gguf_file.absolute()))
    assert commands[1][0] == "template" and "<|im_start|>" in commands[1][1]
    assert commands[2] == ("system", "Answer in French.")
    assert commands[3:] == [("stop", "<|im_start|>"), ("stop", "<|im_end|>")]
    again = write_modelfile(smollm2_source, tmp_path / "again", system="Answer in French.")
    assert again.read_text() == path.read_text()  # a ModelSource works as the name does


# -- bad input ---------------------------------------------------------------------------------


def test_a_toy_without_gguf_says_to_export_one(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"dk\.export_gguf\('toy-tiny'\)"):
        write_modelfile("toy-tiny", tmp_path / "Modelfile")


def test_missing_wrong_or_fake_gguf_files_say_how_to_get_one(tmp_path):
    with pytest.raises(
        InvalidArgumentError, match=r"does not exist.*resolve_model\(name\)\.gguf_file"
    ):
        modelfile(tmp_path / "absent.gguf")
    with pytest.raises(InvalidArgumentError, match=r"not a \.gguf file.*dk\.export_gguf\(name\)"):
        modelfile(tmp_path / "model.safetensors")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(InvalidArgumentError, match="magic"):
        modelfile(fake)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        write_modelfile(tmp_path / "absent.gguf", tmp_path / "Modelfile")


def test_a_gguf_without_chat_template_asks_for_one(tmp_path):
    gguf = metadata_gguf(tmp_path / "bare.gguf", None)
    with pytest.raises(InvalidArgumentError, match=r"no tokenizer\.chat_template.*template="):
        write_modelfile(gguf, tmp_path / "Modelfile")


def test_unknown_parameter_lists_the_valid_names(toy_gguf):
    with pytest.raises(InvalidArgumentError) as info:
        modelfile(toy_gguf, parameters={"mirostat": 1})
    message = str(info.value)
    assert "'mirostat' is not an Ollama parameter" in message
    for name in (
        "num_ctx",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "num_predict",
        "seed",
        "repeat_penalty",
        "min_p",
    ):
        assert name in message and name in PARAMETERS


@pytest.mark.parametrize(
    "parameters, match",
    [
        ({"num_ctx": "4096"}, "num_ctx='4096' must be an integer"),
        ({"num_ctx": 4096.0}, "must be an integer"),
        ({"seed": True}, "must be an integer"),
        ({"temperature": "hot"}, "finite number"),
        ({"temperature": float("nan")}, "finite number"),
        ({"use_mmap": 1}, "True or False"),
        ({"stop": ""}, "stop"),
        ({"stop": []}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"stop": 'x"""y'}, '"""'),
    ],
)
def test_bad_parameter_values(parameters, match, toy_gguf):
    with pytest.raises(InvalidArgumentError, match=match):
        modelfile(toy_gguf, parameters=parameters)


def test_bool_and_float_parameters_are_written_as_ollama_reads_them(toy_gguf):
    commands = parse_modelfile(
        modelfile(toy_gguf, parameters={"use_mmap": False, "min_p": 0, "temperature": 1e-5})
    )
    assert commands[1:] == [("use_mmap", "false"), ("min_p", "0.0"), ("temperature", "1e-05")]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"system": 'He said """no"""'}, '"""'),
        ({"system": "bell\x07"}, "control characters"),
        ({"template": '{{ .Prompt }}"""'}, '"""'),
        ({"template": "  "}, "template is empty"),
        ({"template": "{{ .Prompt }}", "chat_template": CHATML_PLAIN}, "not both"),
    ],
)
def test_text_ollama_cannot_read_back_is_refused(kwargs, match, toy_gguf):
    with pytest.raises(InvalidArgumentError, match=match):
        modelfile(toy_gguf, **kwargs)


# -- the ollama command ------------------------------------------------------------------------


def test_create_command(tmp_path):
    assert create_command("smollm2-dk", tmp_path / "Modelfile") == [
        "ollama",
        "create",
        "smollm2-dk",
        "-f",
        str(tmp_path / "Modelfile"),
    ]
    assert create_command("me/toy:q4", "Modelfile")[2] == "me/toy:q4"
    with pytest.raises(InvalidArgumentError, match="model name"):
        create_command("two words", "Modelfile")


def _tool(folder: Path, script: str) -> None:
    path = folder / "ollama"
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_ollama_available(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ollama_available() == (
        False,
        "no `ollama` on PATH: install it from https://ollama.com/download",
    )
    # what `ollama --version` prints with no server running: it still exits 0
    _tool(
        tmp_path,
        "print('Warning: could not connect to a running Ollama instance')\n"
        "print('Warning: client version is 0.12.3')\n",
    )
    ok, reason = ollama_available()
    assert ok and "client version is 0.12.3" in reason
    _tool(tmp_path, "import sys\nprint('broken install', file=sys.stderr)\nsys.exit(3)\n")
    ok, reason = ollama_available()
    assert not ok and "exited 3" in reason and "broken install" in reason


def test_exported_from_deploykit():
    for name in ("write_modelfile", "ollama_available", "create_command"):  # what 05 calls
        assert name in dk.__all__ and getattr(dk, name) is getattr(dk.engines.ollama, name)
    assert dk.engines.ollama.modelfile is modelfile
