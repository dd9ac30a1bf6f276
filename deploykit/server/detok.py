"""Turn a growing list of token ids into text deltas, and cut the text at stop strings.

Decoding only the tokens since the previous delta (plus those of the delta before, as
context) keeps the cost per token constant, and still gives the right text for
tokenizers that drop a leading space at the start or need several tokens for one
character (the same scheme as vLLM's and TGI's detokenizers).
"""

from __future__ import annotations

from collections.abc import Sequence

_CONTEXT_TOKENS = 5  # prompt tokens decoded before the first new one, for context


class IncrementalDetokenizer:
    """Decode token ids as they arrive and stop at the first stop string."""

    def __init__(
        self, tokenizer, prompt_ids: Sequence[int] = (), stop: tuple[str, ...] = ()
    ) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._max_stop_chars = max((len(s) for s in stop), default=0)
        # the prompt's last tokens give the first new token its leading space
        self._ids: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self.text = ""  # everything decoded so far, stop string excluded
        self._sent_chars = 0  # how much of self.text callers have received
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self.stopped = False
        self.stop_hit: str | None = None  # the stop string that ended the text

    def add(self, token_ids: list[int]) -> str:
        """Append tokens; return the text that is now safe to show (possibly '')."""
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        decode = self._tokenizer.decode
        prefix = decode(
            self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=True
        )
        full = decode(self._ids[self._prefix_offset :], skip_special_tokens=True)
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            # an incomplete multi-byte character, or nothing visible yet: wait for more
            return self._release(final=False)
        self.text += full[len(prefix) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """Return whatever text is still held back, at the end of the request."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._stop:
            # search only where a stop string could newly start
            start = max(0, self._sent_chars - self._max_stop_chars)
            hits = [(i, s) for s in self._stop if (i := self.text.find(s, start)) != -1]
            if hits:
                first, self.stop_hit = min(hits)
                self.text = self.text[:first]
                self.stopped = True
                final = True
        # hold back the last few characters: they may be the start of a stop string
        hold = 0 if final or not self._stop else self._max_stop_chars - 1
        end = max(self._sent_chars, len(self.text) - hold)
        delta = self.text[self._sent_chars : end]
        self._sent_chars = end
        return delta
