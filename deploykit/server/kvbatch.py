"""The running batch: a left-padded KV cache that rows join and leave between steps.

Every row's newest token sits in the same (last) cache column, so one decode forward
serves all rows; a row's padding is masked out and its positions are its own. Joining
pads the shorter side on the left; leaving drops the row and the columns no row needs.
Full-attention caches only (transformers' DynamicCache with DynamicLayer layers); models
with sliding-window layers are refused in `check_model`.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ..errors import InvalidRequestError


def check_model(model) -> None:
    """Refuse models whose cache layout this batch does not handle."""
    if (
        getattr(model.config, "sliding_window", None)
        or getattr(model.config, "layer_types", None)
        and any(t != "full_attention" for t in model.config.layer_types)
    ):
        raise InvalidRequestError(
            f"{type(model).__name__} uses sliding-window attention, which deploykit's reference "
            "engine does not batch; serve it with vLLM (notebook 03) instead."
        )


def _pad_left(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Prepend n zeros along dim."""
    if n == 0:
        return x
    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x.new_zeros(shape), x], dim=dim)


class KVBatch:
    """Decode state of the running rows: cache, attention mask, positions, last tokens."""

    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [B, T] 1 where a cache column is real
        self.positions: torch.Tensor | None = None  # [B, 1] position of the next input token
        self.last_tokens: torch.Tensor | None = None  # [B, 1] the token each row feeds next

    @property
    def size(self) -> int:
        """Return the number of rows."""
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def columns(self) -> int:
        """Return the cache length T (real tokens plus padding)."""
        return 0 if self.mask is None else self.mask.shape[1]

    def prefill(self, model, prompts: list[list[int]], pad_id: int) -> torch.Tensor:
        """Run the prompts as one left-padded forward, append them as rows; return logits [N, V]."""
        n, length = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((n, length), pad_id, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, length - len(prompt) :] = torch.tensor(prompt)
            mask[i, length - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = (t.to(self.device) for t in (ids, mask, positions))
        cache = DynamicCache()
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._join(cache, mask, positions[:, -1:] + 1)
        return out.logits[:, -1]

    def join(self, prefill: ChunkedPrefill) -> None:
        """Append a finished chunked prefill as one more row."""
        if not prefill.finished:
            raise InvalidRequestError("a chunked prefill joins the batch only once it is done")
        n = len(prefill.prompt)
        mask = torch.ones((1, n), dtype=torch.long, device=self.device)
        self._join(prefill.cache, mask, torch.tensor([[n]], device=self.device))

    def decode(self, model, step=None) -> torch.Tensor:
        """Feed every row its last token; return logits [B, V].

        step: a decode step that runs model over this cache (`models.decode_step`), or None
        for the model's own forward.
        """
        assert self.mask is not None and self.positions is not None  # decode needs rows
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.size, 1))], dim=1)
        if step is not None:
            logits = step(self.last_tokens, self.positions, self.mask, self.cache)
        else:
            logits = model(
                input_ids=self.last_tokens,
                attention_mask=self.mask,
                position_ids=self.positions,
                past_key_values=self.cache,
                use_cache=True,
            ).logits[:, -1]
        self.positions = self.positions + 1
        return logits

    def set_last_tokens(self, tokens: list[int], first_row: int = 0) -> None:
        """Record the tokens just sampled for rows first_row.. as their next inputs."""
        new = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
        if first_row == 0:
            self.last_tokens = new
        else:
            assert self.last_tokens is not None  # rows before first_row exist
            self.last_tokens = torch.cat([self.last_tokens[:first_row], new], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, then drop leading columns that no kept row uses."""
        if len(rows) == self.size:
            return
        if not rows:
            self.cache = self.mask = self.positions = self.last_tokens = None
            return
        assert self.mask is not None and self.positions is not None
        assert self.last_tokens is not None and self.cache is not None  # size > len(rows) > 0
        idx = torch.tensor(rows, device=self.device)
        self.mask = self.mask.index_select(0, idx)
        self.positions = self.positions.index_select(0, idx)
        self.last_tokens = self.last_tokens.index_select(0, idx)
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, idx)[:, :, start:]
            layer.values = layer.values.index_select(0, idx)[:, :, start:]

    def _join(self, cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor) -> None:
        if self.mask is None:
            self.cache, self.mask, self.positions = cache, mask, positions
            self.last_tokens = torch.zeros_like(positions)
            return
        assert self.cache is not None  # set together with self.mask
        old_t, new_t = self.columns, mask.shape[1]
        width = max(old_t, new_t)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            # keys/values: [B, kv_heads, T, head_dim]
            mine.keys = torch.cat(
                [_pad_left(mine.keys, width - old_t, 2), _pad_left(theirs.keys, width - new_t, 2)],
                dim=0,
            )
            mine.values = torch.cat(
                [
                    _pad_left(mine.values, width - old_t, 2),
                    _pad_left(theirs.values, width - new_t, 2),
                ],
                dim=0,
            )
        self.mask = torch.cat(
            [_pad_left(self.mask, width - old_t, 1), _pad_left(mask, width - new_t, 1)], dim=0
        )
        self.positions = torch.cat([self.positions, positions], dim=0)
        self.last_tokens = torch.cat([self.last_tokens, torch.zeros_like(positions)], dim=0)


class ChunkedPrefill:
    """One long prompt prefilled a chunk at a time into its own cache, between decode steps.

    Each `run` feeds the next chunk of tokens with the cache of the chunks before it, so the
    running rows wait one chunk's forward per step, not the whole prompt's (the engine
    decodes them after each chunk). Once the last chunk has run, `KVBatch.join` makes it a
    row of the batch.
    """

    def __init__(self, prompt: list[int], device: str | torch.device) -> None:
        self.prompt = list(prompt)
        self.device = torch.device(device)
        self.cache = DynamicCache()
        self.done = 0  # prompt tokens already in the cache

    @property
    def finished(self) -> bool:
        """Return True once every prompt token is in the cache."""
        return self.done == len(self.prompt)

    def run(self, model, tokens: int) -> torch.Tensor | None:
        """Feed the next `tokens` prompt tokens; return the last one's logits [1, V] after the
        last chunk, else None."""
        chunk = self.prompt[self.done : self.done + tokens]
        end = self.done + len(chunk)
        out = model(
            input_ids=torch.tensor([chunk], device=self.device),
            attention_mask=torch.ones((1, end), dtype=torch.long, device=self.device),
            position_ids=torch.arange(self.done, end, device=self.device)[None],
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.done = end
        return out.logits[:, -1] if self.finished else None
