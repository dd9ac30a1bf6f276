"""plot_bars: every bar readable, whatever the values and labels."""

import deploykit as dk


def test_values_spanning_decades_get_a_log_axis_and_each_bar_its_value():
    fig = dk.plot_bars({"miss (server)": 40.2, "hit (memory)": 0.04}, "latency (ms)")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()
    assert [t.get_text() for t in ax.texts] == ["40.2", "0.04"]
    linear = dk.plot_bars({"a": 40.0, "b": 20.0, "zero": 0.0}, "ms").axes[0]
    assert linear.get_yscale() == "linear"  # a zero has no place on a log axis
    assert [t.get_text() for t in linear.texts] == ["40.0", "20.0", "0"]


def test_long_labels_are_slanted_and_horizontal_bars_keep_their_order():
    ax = dk.plot_bars({"deploykit (OpenAI API, wall)": 3.1, "llama.cpp": 24.0}, "tokens/s").axes[0]
    assert ax.get_xticklabels()[0].get_rotation() == 25
    across = dk.plot_bars({"weights": 513.1, "process rss": 1007.6}, "MiB", horizontal=True)
    ax = across.axes[0]
    assert ax.get_xlabel() == "MiB"
    # the first label on top: y grows downwards once inverted
    assert ax.yaxis_inverted()
    assert [t.get_text() for t in ax.texts] == ["513", "1,008"]
    assert ax.get_xlim()[1] > 1007.6  # room for the value past the longest bar
