"""Task-balanced mixing of training sources: the sampler, its resumable position, and share reporting.

Owns which training row comes next. The training split is one dataset; each source (a named
dataset entry of the recipe, one task each) is a group of its row indices. The mixture is one
*global sequence* of row indices, a pure function of (seed, sources, shares, global position):

- the source of global draw ``g`` is drawn with the planned probabilities by a generator seeded
  from ``(seed, g // CHUNK)``: counter-based, so any position is reachable without RNG state;
- within a source, rows are taken without replacement from a permutation seeded from
  ``(seed, source name, epoch of that source)``; when a source is exhausted its next epoch is a
  fresh permutation. The ``k``-th draw of source ``s`` is ``perm(s, k // n_s)[k % n_s]``.

So the whole state is the global position plus how many draws each source has had up to it.

Length-aware bucketing (``bucket_batches`` > 0, with a length key per row): the sequence is cut
into windows of ``bucket_batches`` global batches; within a window the draws are ordered by
length (stable), cut into global batches, and the batches shuffled by a generator seeded from
``(seed, window)``. A window holds exactly the draws it held without bucketing, so the mixture's
shares are kept window by window, and any position is still a pure function of the seed: resume
recomputes the window it falls in. Rows of similar length share a batch, so little is padding.
The sequence does not depend on batch size or world size: it is cut into global batches of
``batch_size * num_replicas`` draws and rank ``r`` takes positions ``[r*b, (r+1)*b)`` of each,
so two processes with batch ``b`` see exactly what one process with batch ``2b`` would.

Resume contract (the sampler cannot know what the loop consumed, because DataLoader prefetch
runs its iterator ahead, so the loop reports it):

1. build the sampler; on resume call ``load_state_dict(ckpt)`` BEFORE creating the DataLoader
   iterator (``__iter__`` snapshots the position when called);
2. after each global batch is consumed by the training step (every rank's micro-batch; with
   gradient accumulation, each micro-step counts), call ``advance()`` on every rank, or call
   ``set_position(global_batches_consumed)`` before checkpointing;
3. save ``state_dict()``: it describes the consumed position, never the prefetched one.

``__iter__`` never moves the position itself: a second ``iter()`` without ``advance`` replays
from the same place.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from pipeline.errors import DataError

logger = logging.getLogger(__name__)

STRATEGIES = ("proportional", "temperature", "uniform", "weights")
CHUNK = 8192  # draws per source-choice generator; part of the sequence's definition (in state_dict)
_STATE_VERSION = 1
_CHOICE_TAG, _PERM_TAG, _BUCKET_TAG = 0, 1, 2  # keep the seed streams apart


def planned_probabilities(
    sizes: Mapping[str, int],
    *,
    strategy: str = "temperature",
    temperature: float = 2.0,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Probability of drawing each source, in the order of ``sizes``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mixture strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    names = list(sizes)
    if weights is not None and strategy != "weights":
        raise ValueError(f"mixture weights were given but strategy is {strategy!r}; use strategy 'weights'")
    if strategy == "proportional":
        raw = [float(sizes[s]) for s in names]
    elif strategy == "uniform":
        raw = [1.0] * len(names)
    elif strategy == "temperature":
        if not (temperature > 0):  # also rejects NaN
            raise ValueError(f"mixture temperature must be > 0, got {temperature}")
        # T5/mT5: p ∝ n^(1/T); T=1 is proportional, T=inf is uniform
        raw = [float(sizes[s]) ** (1.0 / temperature) for s in names]
    else:
        raw = _check_weights(names, weights)
    total = math.fsum(raw)
    if not total > 0:
        raise ValueError("mixture weights are all zero: no source would ever be drawn")
    return {s: r / total for s, r in zip(names, raw, strict=True)}


def _check_weights(names: list[str], weights: Mapping[str, float] | None) -> list[float]:
    known = ", ".join(names)
    if weights is None:
        raise ValueError(f"mixture strategy 'weights' needs a weight for every source: {known}")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"mixture weights name unknown sources {unknown}; known: {known}")
    missing = [s for s in names if s not in weights]
    if missing:
        raise ValueError(f"mixture weights lack sources {missing}; every source needs one (0 excludes it)")
    out = []
    for s in names:
        w = float(weights[s])
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"mixture weight of source {s!r} must be a finite number >= 0, got {weights[s]}")
        out.append(w)
    return out


class MixtureMismatch(ValueError):
    """A saved sampler state that does not fit this sampler: `key` of the state differs (`saved`,
    `now`: the two states). `data_changes` says it in words when the training data changed."""

    def __init__(self, message: str, *, key: str, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.key, self.saved, self.now = key, saved, now

    def data_changes(self) -> str | None:
        """The training sources' changes between the two states ("shapes_vqa: 24 records then, 20
        now"), or None when the difference is not in the data (a seed, the bucketing)."""
        if self.key not in ("sources", "source_sizes", "groups_digest"):
            return None
        then = dict(zip(self.saved["sources"], self.saved["source_sizes"], strict=False))
        now = dict(zip(self.now["sources"], self.now["source_sizes"], strict=False))
        parts = [
            f"{s}: {_records(then.get(s))} then, {_records(now.get(s))} now"
            for s in dict.fromkeys([*then, *now])
            if then.get(s) != now.get(s)
        ]
        return "; ".join(parts) or "the same sources and sizes, but other records"


def _records(n: int | None) -> str:
    return "absent" if n is None else f"{n} record{'s' if n != 1 else ''}"


def _name_key(name: str) -> int:
    # stable across processes and Python runs, unlike hash()
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


class MixtureSampler(torch.utils.data.Sampler[int]):
    """Infinite (or ``num_samples``-long) stream of this rank's row indices from the source mixture.

    ``groups`` maps source name -> row indices of that source in the training dataset (see
    ``groups_from_sources``). ``batch_size`` is the per-process batch size; give the DataLoader the
    same ``batch_size`` so its batches line up with this rank's slices of the global batches.
    ``num_samples`` (global draws, a multiple of ``batch_size * num_replicas``) bounds each
    ``iter()`` and makes ``len()`` = ``num_samples // num_replicas``; without it the stream is
    infinite and ``len()`` raises TypeError (the loop runs for a fixed number of steps).

    Don't let another layer re-shard this sampler across processes (it already yields only this
    rank's share); if a wrapper does shard, build it with ``num_replicas=1`` instead. See the module
    docstring for the resume contract.
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[int]],
        *,
        strategy: str = "temperature",
        temperature: float = 2.0,
        weights: Mapping[str, float] | None = None,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: int | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
        bucket_batches: int = 0,
    ) -> None:
        super().__init__()
        if not groups:
            raise ValueError("the mixture has no sources")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.global_batch_size = batch_size * num_replicas
        if num_samples is not None and (num_samples < 1 or num_samples % self.global_batch_size):
            raise ValueError(
                f"num_samples ({num_samples}) must be a positive multiple of the global batch size "
                f"batch_size * num_replicas = {self.global_batch_size}, so every rank gets whole batches"
            )
        self.num_samples = num_samples

        rows: dict[str, np.ndarray] = {}
        for name, idx in groups.items():
            arr = np.asarray(idx, dtype=np.int64).reshape(-1)
            if arr.size == 0:
                raise DataError(f"source {name!r} has no records in the training split", field="source")
            if arr.min() < 0:
                raise DataError(f"source {name!r} has negative row indices", field="source")
            rows[name] = arr
        self._probs = planned_probabilities(
            {s: len(r) for s, r in rows.items()}, strategy=strategy, temperature=temperature, weights=weights
        )
        self.strategy = strategy

        # sorted names: the sequence must not depend on the order the recipe lists sources in
        self._names = sorted(rows)
        self._rows = [rows[s] for s in self._names]
        self._sizes = np.array([len(r) for r in self._rows], dtype=np.int64)
        self._keys = [_name_key(s) for s in self._names]
        p = np.array([self._probs[s] for s in self._names])
        self._active = np.flatnonzero(p > 0)  # zero-weight sources are left out of the draw entirely
        cdf = np.cumsum(p[self._active])
        cdf[-1] = 1.0  # guard float round-off: u in [0, 1) always lands on an active source
        self._cdf = cdf
        digest = hashlib.sha256()
        for s, r in zip(self._names, self._rows, strict=True):
            digest.update(s.encode() + b"\0" + r.tobytes())
        self._digest = digest.hexdigest()[:16]

        if bucket_batches < 0:
            raise ValueError(f"bucket_batches must be >= 0, got {bucket_batches}")
        self.bucket_batches = bucket_batches if lengths is not None else 0
        if self.bucket_batches:
            self._lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
            top = max(int(r.max()) for r in self._rows)
            if self._lengths.size <= top:
                raise ValueError(f"lengths has {self._lengths.size} entries; the groups name row {top}")
            self._source_of = np.full(top + 1, -1, dtype=np.int64)
            for i, r in enumerate(self._rows):
                self._source_of[r] = i
            digest.update(b"lengths" + self._lengths.tobytes())
            self._digest = digest.hexdigest()[:16]
        self._window_size = self.bucket_batches * self.global_batch_size
        self._window_cache: tuple[int, np.ndarray, np.ndarray] | None = None  # (w, rows, base counts)

        self._choice_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        # consumed position and per-source draw counts there; set_position rolls forward from it
        self._position = 0
        self._counts = np.zeros(len(self._names), dtype=np.int64)
        logger.info("mixture (%s, seed %d) planned shares:\n%s", strategy, seed, self.share_table())

    # -- the pure sequence -------------------------------------------------------------------

    def _choices(self, chunk: int) -> np.ndarray:
        """Source id (into self._names) of each draw in ``[chunk*CHUNK, (chunk+1)*CHUNK)``."""
        hit = self._choice_cache.get(chunk)
        if hit is not None:
            self._choice_cache.move_to_end(chunk)
            return hit
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _CHOICE_TAG, chunk])))
        out = self._active[np.searchsorted(self._cdf, rng.random(CHUNK), side="right")]
        self._choice_cache[chunk] = out
        if len(self._choice_cache) > 8:
            self._choice_cache.popitem(last=False)
        return out

    def _perm(self, s: int, epoch: int) -> np.ndarray:
        """Rows of source ``s`` in the order of its ``epoch``-th pass."""
        ss = np.random.SeedSequence([self.seed, _PERM_TAG, self._keys[s], epoch])
        return self._rows[s][np.random.Generator(np.random.PCG64(ss)).permutation(self._sizes[s])]

    def _counts_between(self, start: int, stop: int) -> np.ndarray:
        """Per-source draw counts over global positions ``[start, stop)``."""
        counts = np.zeros(len(self._names), dtype=np.int64)
        pos = start
        while pos < stop:
            chunk, off = divmod(pos, CHUNK)
            end = min(stop, (chunk + 1) * CHUNK)
            counts += np.bincount(self._choices(chunk)[off : off + end - pos], minlength=len(self._names))
            pos = end
        return counts

    def _counts_at(self, position: int) -> np.ndarray:
        if self.bucket_batches:  # the window's base counts plus what its reordered prefix drew
            w, off = divmod(position, self._window_size)
            _, rows, base = self._window(w)
            return base + np.bincount(self._source_of[rows[:off]], minlength=len(self._names))
        if position >= self._position:
            return self._counts + self._counts_between(self._position, position)
        return self._counts_between(0, position)  # going back: counted from the start

    def _window(self, w: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(w, rows of bucket window ``w`` in training order, per-source draws before it)."""
        hit = self._window_cache
        if hit is not None and hit[0] == w:
            return hit
        size = self._window_size
        if hit is not None and hit[0] == w - 1:  # the next window: its base counts follow on
            base = hit[2] + np.bincount(self._source_of[hit[1]], minlength=len(self._names))
        else:
            base = self._counts_between(0, w * size)
        it = self._global_iter(w * size, base)
        rows = np.fromiter((next(it)[1] for _ in range(size)), dtype=np.int64, count=size)
        self._window_cache = (w, self._order(w, rows), base)
        return self._window_cache

    def _order(self, w: int, rows: np.ndarray) -> np.ndarray:
        """A window's draws by length (stable), cut into global batches, the batches shuffled."""
        batches = rows[np.argsort(self._lengths[rows], kind="stable")].reshape(self.bucket_batches, -1)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _BUCKET_TAG, w])))
        return batches[rng.permutation(self.bucket_batches)].reshape(-1)

    def _sequence(self, start: int, counts_at_start: np.ndarray) -> Iterator[tuple[int, int]]:
        """(global position, row) of the training order from ``start`` on: bucketed or not."""
        if not self.bucket_batches:
            yield from self._global_iter(start, counts_at_start)
            return
        size, w = self._window_size, start // self._window_size
        while True:
            _, rows, _ = self._window(w)
            lo = max(start - w * size, 0)
            yield from zip(range(w * size + lo, (w + 1) * size), rows[lo:].tolist(), strict=True)
            w += 1

    def global_rows(self, start: int, stop: int) -> list[int]:
        """Rows at global positions ``[start, stop)`` of the sequence, all ranks together."""
        out: list[int] = []
        it = self._sequence(start, self._counts_at(start))
        for _ in range(stop - start):
            out.append(next(it)[1])
        return out

    def _global_iter(self, start: int, counts_at_start: np.ndarray) -> Iterator[tuple[int, int]]:
        """(global position, row) from ``start`` on, forever; computed a chunk at a time."""
        chunk = start // CHUNK
        # counts at the chunk's first draw, so the chunk can be filled in one vectorised pass
        counts = counts_at_start - self._counts_between(chunk * CHUNK, start)
        current: dict[int, tuple[int, np.ndarray]] = {}  # source -> (epoch, perm): epochs only grow
        while True:
            choice = self._choices(chunk)
            rows = np.empty(CHUNK, dtype=np.int64)
            for s in np.unique(choice).tolist():
                where = np.flatnonzero(choice == s)
                ranks = counts[s] + np.arange(where.size)
                epochs, offsets = np.divmod(ranks, self._sizes[s])
                for e in range(int(epochs[0]), int(epochs[-1]) + 1):
                    if s not in current or current[s][0] != e:
                        current[s] = (e, self._perm(s, e))
                    m = epochs == e
                    rows[where[m]] = current[s][1][offsets[m]]
                counts[s] += where.size
            lo = max(start, chunk * CHUNK)
            yield from zip(range(lo, (chunk + 1) * CHUNK), rows[lo - chunk * CHUNK :].tolist(), strict=True)
            chunk += 1

    # -- the Sampler interface ---------------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        # read the position now, not at the first next(): the iterator must not see later advances
        return self._rank_iter(self._position, self._counts.copy())

    def _rank_iter(self, start: int, counts: np.ndarray) -> Iterator[int]:
        stop = None if self.num_samples is None else start + self.num_samples
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        g_size = self.global_batch_size
        for pos, row in self._sequence(start, counts):
            if stop is not None and pos >= stop:
                return
            if lo <= pos % g_size < hi:
                yield row

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("MixtureSampler is an infinite stream; give num_samples for a length")
        return self.num_samples // self.num_replicas

    # -- position and resume -------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Global draws consumed (all ranks together)."""
        return self._position

    def set_position(self, global_batches_consumed: int) -> None:
        """Declare how many global batches the loop has consumed since the start of training."""
        if global_batches_consumed < 0:
            raise ValueError(f"global_batches_consumed must be >= 0, got {global_batches_consumed}")
        self._seek(global_batches_consumed * self.global_batch_size)

    def advance(self, n_batches: int = 1) -> None:
        """Declare ``n_batches`` more global batches consumed by the training step."""
        if n_batches < 0:
            raise ValueError(f"n_batches must be >= 0, got {n_batches}")
        self._seek(self._position + n_batches * self.global_batch_size)

    def _seek(self, position: int) -> None:
        self._counts = self._counts_at(position)
        self._position = position

    def consumed_counts(self) -> dict[str, int]:
        """Draws of each source up to the consumed position, over all ranks (no gather needed)."""
        return {s: int(c) for s, c in zip(self._names, self._counts, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        """The consumed position. No RNG state: the generators are seeded by position (see module)."""
        counts = self.consumed_counts()
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "chunk_size": CHUNK,
            "sources": list(self._names),
            "source_sizes": [int(n) for n in self._sizes],
            "probabilities": [self._probs[s] for s in self._names],
            "groups_digest": self._digest,
            "bucket_batches": self.bucket_batches,
            "global_batch_size": self.global_batch_size,
            "global_draws": self._position,
            "source_counts": counts,
            # derived, for people reading a checkpoint: pass number and place within it, per source
            "source_epochs": {s: c // int(n) for (s, c), n in zip(counts.items(), self._sizes, strict=True)},
            "source_offsets": {s: c % int(n) for (s, c), n in zip(counts.items(), self._sizes, strict=True)},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where ``state`` was saved; refuse a state from a different mixture."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"mixture state version {state.get('version')!r}; this code reads {_STATE_VERSION}"
            )
        mine = self.state_dict()
        state = {"bucket_batches": 0, **state}  # written before bucketing existed: none
        for key in ("seed", "chunk_size", "sources", "source_sizes", "bucket_batches", "groups_digest"):
            if state[key] != mine[key]:
                hint = (
                    f" (set mixture.bucket_batches={state[key]} to resume)" if key == "bucket_batches" else ""
                )
                raise MixtureMismatch(
                    f"mixture state does not match this sampler: {key} is {state[key]!r} in the "
                    f"checkpoint but {mine[key]!r} now; the sequence cannot be continued exactly{hint}",
                    key=key,
                    saved=state,
                    now=mine,
                )
        if not np.allclose(state["probabilities"], mine["probabilities"], rtol=1e-12, atol=0):
            raise ValueError(
                f"mixture state does not match this sampler: planned probabilities were "
                f"{state['probabilities']} but are {mine['probabilities']} now"
            )
        if self.bucket_batches and state["global_batch_size"] != self.global_batch_size:
            raise ValueError(
                f"mixture state was saved with a global batch of {state['global_batch_size']}, now "
                f"{self.global_batch_size}: bucket windows are cut in global batches, so the sequence "
                "cannot be continued exactly; resume with the same batch_size * num_replicas"
            )
        position = int(state["global_draws"])
        counts = np.array([int(state["source_counts"][s]) for s in self._names], dtype=np.int64)
        if counts.sum() != position:
            raise ValueError(f"corrupt mixture state: source counts sum to {counts.sum()}, not {position}")
        if position % self.global_batch_size:
            raise ValueError(
                f"mixture state is at draw {position}, not a whole number of global batches of "
                f"{self.global_batch_size}; resume with the same batch_size * num_replicas"
            )
        self._position, self._counts = position, counts

    # -- shares ----------------------------------------------------------------------------

    def planned_shares(self) -> dict[str, float]:
        """Planned probability of each source, in the order the groups were given."""
        return dict(self._probs)

    def tracker(self) -> ShareTracker:
        return ShareTracker(self._probs)

    def share_table(self) -> str:
        """Planned vs realised shares at the consumed position (global, all ranks)."""
        return format_shares(self._probs, self.consumed_counts())


def bucket_keys(
    target_tokens: Sequence[int] | np.ndarray, prompt_chars: Sequence[int] | np.ndarray
) -> np.ndarray:
    """The length key bucketing sorts rows by: target tokens (the padding the loss pays for), then
    the prompt's length in characters (the rest of the sequence's padding)."""
    chars = np.minimum(np.asarray(prompt_chars, dtype=np.int64), (1 << 20) - 1)
    return np.asarray(target_tokens, dtype=np.int64) * (1 << 20) + chars


def groups_from_sources(sources: Iterable[str]) -> dict[str, list[int]]:
    """Source name per row (e.g. a records dataset's ``source`` column) -> rows of each source."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    return groups


def format_shares(planned: Mapping[str, float], counts: Mapping[str, int]) -> str:
    """A small table of planned vs realised share per source."""
    total = sum(counts.values())
    names = list(planned) + [s for s in counts if s not in planned]
    width = max(len("source"), *(len(s) for s in names))
    lines = [f"{'source':<{width}}  planned  realised     draws"]
    for s in names:
        n = counts.get(s, 0)
        realised = f"{n / total:8.2%}" if total else f"{'-':>8}"
        lines.append(f"{s:<{width}}  {planned.get(s, 0.0):7.2%}  {realised}  {n:8d}")
    return "\n".join(lines)


class ShareTracker:
    """Realised draws per source, fed by the loop with the sources of consumed batches."""

    def __init__(self, planned: Mapping[str, float]) -> None:
        self.planned = dict(planned)
        self.counts: Counter[str] = Counter()

    def update(self, sources: Iterable[str]) -> None:
        self.counts.update(sources)

    def realised(self) -> dict[str, float]:
        total = sum(self.counts.values())
        return {s: (self.counts[s] / total if total else 0.0) for s in self.planned}

    def table(self) -> str:
        return format_shares(self.planned, self.counts)
