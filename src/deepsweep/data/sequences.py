"""Sequence data sources: SMS Spam (text -> token ids), ECG200 (a univariate time series per heartbeat),
and synthetic long-memory tasks generated from a seed.

Text is tokenized and its vocabulary built in prepare, from the training split only, so validation and
test words the model never saw in training map to <unk>; the vocabulary is written beside the tensors.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from deepsweep import paths
from deepsweep.errors import DataFileError
from deepsweep.data.sources import Split, Splits, _stratified_split, random_split

PAD, MASK, UNK = "<pad>", "<mask>", "<unk>"
SPECIALS = (PAD, MASK, UNK)  # ids 0, 1, 2: padding, the masked-token pretraining mask, unknown words
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and digit runs; each other non-space character is a token of its own."""
    return _TOKEN.findall(text.lower())


def build_vocab(texts: list[str], min_freq: int, max_size: int) -> list[str]:
    counts = Counter(tok for text in texts for tok in tokenize(text))
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
    return [*SPECIALS, *words[: max_size - len(SPECIALS)]]


def encode(texts: list[str], vocab: list[str], max_len: int) -> np.ndarray:
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(tok, unk) for tok in tokenize(text)][:max_len]
        out[row, : len(ids)] = ids
    return out


@dataclass
class SmsSpam:
    """SMS Spam Collection v.1 (5,574 messages, ham/spam), stratified train/val/test."""

    kind = "sequence"
    root: str = "data/sms_spam/raw"
    max_len: int = 64
    min_freq: int = 2
    max_vocab: int = 8000
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 64

    def load(self) -> tuple[Splits, dict]:
        path = paths.resolve(self.root) / "SMSSpamCollection"
        if not path.is_file():
            raise FileNotFoundError(f"data.root: {path} not found (the SMS Spam Collection file)")
        labels, texts = [], []
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFileError(f"{path}:{n}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            label, sep, text = line.partition("\t")
            if not sep or label not in ("ham", "spam"):
                raise DataFileError(f"{path}:{n}: expected '<ham|spam>\\t<text>', got {line[:60]!r}")
            labels.append(int(label == "spam"))
            texts.append(text)
        y = np.array(labels, dtype=np.int64)
        idx = np.arange(len(texts))
        rest, test = _stratified_split(idx, y, self.test_fraction, self.split_seed)
        train, val = _stratified_split(rest.x, rest.y, self.val_fraction / (1 - self.test_fraction), self.split_seed)
        vocab = build_vocab([texts[i] for i in train.x], self.min_freq, self.max_vocab)
        as_split = lambda s: Split(encode([texts[i] for i in s.x], vocab, self.max_len), s.y)  # noqa: E731
        splits = Splits(as_split(train), as_split(val), as_split(test), ["ham", "spam"])
        return splits, {"vocab_size": len(vocab), "vocab": vocab, "pad_id": 0, "mask_id": 1}


@dataclass
class Ecg200:
    """ECG200 (UCR archive): 100 train + 100 test heartbeats of 96 samples, normal vs myocardial
    infarction. The official test set is the test split; validation is held out of the training set."""

    kind = "sequence"
    root: str = "data/ecg200/raw"
    val_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 16

    def _read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        path = paths.resolve(self.root) / name
        if not path.is_file():
            raise FileNotFoundError(f"data.root: {path} not found (ECG200 in the UCR text format)")
        rows = []
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            try:
                values = [float(v) for v in line.decode("ascii").split()]
            except (UnicodeDecodeError, ValueError):
                raise DataFileError(f"{path}:{n}: expected a label and numbers separated by spaces, "
                                    f"got {line[:60]!r}") from None
            if values:
                if rows and len(values) != len(rows[0]):
                    raise DataFileError(f"{path}:{n}: {len(values)} values where line 1 has {len(rows[0])}")
                rows.append(values)
        if not rows:
            raise DataFileError(f"{path}: empty file")
        table = np.asarray(rows, dtype=np.float32)
        return table[:, 1:, None], (table[:, 0] > 0).astype(np.int64)  # label 1 = normal, -1 = infarction

    def load(self) -> tuple[Splits, dict]:
        x, y = self._read("ECG200_TRAIN.txt")
        x_test, y_test = self._read("ECG200_TEST.txt")
        train, val = _stratified_split(x, y, self.val_fraction, self.split_seed)
        return Splits(train, val, Split(x_test, y_test), ["infarction", "normal"]), {}


@dataclass
class SyntheticSequences:
    """Random binary sequences of ``length`` steps; the label needs the whole past:
    ``first_bit`` - the value at step 0 (a memory task that vanishing gradients make hard for plain RNNs
    as length grows); ``parity`` - the XOR of all bits."""

    kind = "sequence"
    task: str = "first_bit"
    length: int = 50
    num_samples: int = 4000
    split_seed: int = 0
    batch_size: int = 64

    def load(self) -> tuple[Splits, dict]:
        if self.task not in ("first_bit", "parity"):
            raise ValueError(f"data.task: unknown task {self.task!r}; allowed: first_bit, parity")
        rng = np.random.default_rng(self.split_seed)
        bits = rng.integers(0, 2, size=(self.num_samples, self.length))
        y = (bits[:, 0] if self.task == "first_bit" else bits.sum(1) % 2).astype(np.int64)
        x = bits.astype(np.float32)[:, :, None]
        rest, test = _stratified_split(x, y, 0.2, self.split_seed)
        train, val = _stratified_split(rest.x, rest.y, 0.2, self.split_seed)
        return Splits(train, val, test, ["0", "1"]), {}


BOS, EOS = "<bos>", "<eos>"  # ids 3 and 4 of a translation vocabulary, after SPECIALS
BOS_ID, EOS_ID = len(SPECIALS), len(SPECIALS) + 1
TRANSLATIONS = ("reverse", "sort", "dates")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")


def _date_pair(rng: np.random.Generator) -> tuple[str, str]:
    """A date written one of five ways, and the same date in ISO 8601 (the target)."""
    year, month = int(rng.integers(1950, 2050)), int(rng.integers(1, 13))
    days = (31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31,
            30, 31)[month - 1]
    day = int(rng.integers(1, days + 1))
    name = MONTHS[month - 1]
    style = int(rng.integers(5))
    source = (f"{day} {name} {year}", f"{name} {day}, {year}", f"{day:02d}/{month:02d}/{year}",
              f"{name[:3]} {day:02d} {year}", f"{year}, {day} {name}")[style]
    return source, f"{year}-{month:02d}-{day:02d}"


@dataclass
class SyntheticTranslation:
    """Sequence-to-sequence tasks drawn from ``split_seed`` (no download), one character per token:
    ``reverse`` or ``sort`` a string of ``min_len``..``max_len`` symbols from an alphabet of ``symbols`` letters,
    or ``dates``: a date written one of five ways ("5 march 1998", "march 5, 1998", "05/03/1998", "mar 05 1998",
    "1998, 5 march") into ISO 8601 ("1998-03-05"). Reversal is the task where a fixed-size summary of the
    source fails as it grows (Sutskever et al. 2014 reversed their sources to shorten the dependencies) and
    attention does not (Bahdanau et al. 2015).

    ``x``: the source's token ids, padded with 0; ``y``: the target's ids followed by <eos>, padded with 0.
    One vocabulary for both: SPECIALS, <bos>, <eos>, then the characters."""

    kind = "sequence"
    target = "tokens"
    task: str = "reverse"
    min_len: int = 5
    max_len: int = 20
    symbols: int = 10
    num_samples: int = 6000
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    batch_size: int = 64

    def pairs(self) -> list[tuple[str, str]]:
        if self.task not in TRANSLATIONS:
            raise ValueError(f"data.task: unknown task {self.task!r}; allowed: {', '.join(TRANSLATIONS)}")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"data.min_len: {self.min_len} must be between 1 and data.max_len={self.max_len}")
        if not 2 <= self.symbols <= 26:
            raise ValueError(f"data.symbols: {self.symbols} must be between 2 and 26 (letters a..z)")
        rng = np.random.default_rng(self.split_seed)
        if self.task == "dates":
            return [_date_pair(rng) for _ in range(self.num_samples)]
        alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz"[: self.symbols]))
        pairs = []
        for length in rng.integers(self.min_len, self.max_len + 1, size=self.num_samples):
            source = "".join(rng.choice(alphabet, size=int(length)))
            pairs.append((source, source[::-1] if self.task == "reverse" else "".join(sorted(source))))
        return pairs

    def load(self) -> tuple[Splits, dict]:
        pairs = self.pairs()
        characters = sorted({c for pair in pairs for text in pair for c in text})
        vocab = [*SPECIALS, BOS, EOS, *characters]
        index = {c: i for i, c in enumerate(vocab)}
        source_len = max(len(s) for s, _ in pairs)
        target_len = max(len(t) for _, t in pairs) + 1  # + <eos>
        x = np.zeros((len(pairs), source_len), dtype=np.int64)
        y = np.zeros((len(pairs), target_len), dtype=np.int64)
        for row, (source, target) in enumerate(pairs):
            x[row, : len(source)] = [index[c] for c in source]
            y[row, : len(target) + 1] = [index[c] for c in target] + [EOS_ID]
        # Another stream than the pairs' own (split_seed drew them): the split is no function of the draw order.
        train, val, test = random_split(x, y, self.val_fraction, self.test_fraction, self.split_seed + 1)
        return (Splits(train, val, test, vocab),
                {"vocab_size": len(vocab), "vocab": vocab, "pad_id": 0, "mask_id": 1, "bos_id": BOS_ID, "eos_id": EOS_ID})
