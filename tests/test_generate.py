import pytest

import deploykit as dk

PROMPT = "Return the number of items in the list."


def test_generate_returns_only_new_text(tiny):
    g = dk.generate(tiny, PROMPT, max_tokens=12)
    ids = tiny.tokenizer(PROMPT, return_tensors="pt")
    full = tiny.model.generate(**ids, max_new_tokens=12, do_sample=False)
    expected = tiny.tokenizer.decode(full[0, ids.input_ids.shape[1] :], skip_special_tokens=True)
    assert g.text == expected and not g.text.startswith(PROMPT)
    assert g.prompt_tokens == ids.input_ids.shape[1] and 0 < g.completion_tokens <= 12


def test_sampling_is_seeded(tiny):
    a = dk.generate(tiny, PROMPT, max_tokens=16, temperature=1.0, seed=3)
    b = dk.generate(tiny, PROMPT, max_tokens=16, temperature=1.0, seed=3)
    assert a.text == b.text


def test_ignore_eos_gives_exact_length(tiny):
    assert dk.generate(tiny, PROMPT, max_tokens=20, ignore_eos=True).completion_tokens == 20


def test_stream_matches_generate(tiny):
    pieces = list(dk.stream(tiny, PROMPT, max_tokens=16))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == dk.generate(tiny, PROMPT, max_tokens=16).text.strip()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_sampling_arguments(tiny, kwargs, match):
    with pytest.raises(dk.InvalidArgumentError, match=match):
        dk.generate(tiny, PROMPT, **kwargs)


@pytest.mark.parametrize("messages, match", [([{"content": "Hi"}], "role"), (["Hi"], "role")])
def test_bad_chat_messages(tiny, messages, match):
    with pytest.raises(dk.InvalidArgumentError, match=match):
        dk.generate(tiny, messages)


def test_chat_messages_go_through_the_template(tiny):
    messages = [{"role": "user", "content": "Return the"}]
    chat = dk.generate(tiny, messages, max_tokens=4)
    text = tiny.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat.prompt_tokens == len(tiny.tokenizer(text, add_special_tokens=False).input_ids)
    pieces = dk.record_arrivals(dk.stream(tiny, messages, max_tokens=4))
    assert pieces.text.strip() == chat.text.strip() and len(pieces.arrival_s) == len(pieces.pieces)
    assert list(pieces.arrival_s) == sorted(pieces.arrival_s)


def test_empty_prompt(tiny):
    with pytest.raises(dk.InvalidArgumentError, match="empty"):
        dk.generate(tiny, "")


def test_measure_and_footprint(tiny):
    speed = dk.measure_throughput(tiny, PROMPT, max_tokens=8, runs=2, progress=False)
    assert speed["tokens_per_s"] > 0 and speed["device"] == "cpu" and speed["dtype"] == "float32"
    footprint = dk.memory_footprint(tiny)
    params = sum(p.numel() * p.element_size() for p in tiny.model.parameters())
    assert footprint["weights_bytes"] >= params
    assert footprint["process_rss_bytes"] > footprint["weights_bytes"]


def test_arrivals_plot_starts_at_zero_and_marks_the_first_piece():
    arrivals = dk.record_arrivals(iter(["a", "", "b", "c"]))
    ax = arrivals.plot()
    assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0  # the wait before the first piece shows
    assert [t.get_text() for t in ax.texts] == [
        f" first piece after {arrivals.first_s * 1000:.0f} ms"
    ]
    assert len(ax.lines) == 2  # the steps, and the first piece's time
