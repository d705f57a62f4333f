"""A condition: which heads one ``rh-masked`` configuration masks or windows, and how. One object from end to end.

A condition is parsed once (:meth:`Condition.parse`, from ``--model_args`` or a suite file), resolved on a model
into the heads it masks (:func:`model_wrappers.heads.selection.resolve_heads`), recorded in a results file's
``config.rh_masking`` (:meth:`Condition.record`) and read back by the report (:meth:`Condition.from_record`).
Its :attr:`~Condition.label` is how reports show it, and its :attr:`~Condition.name` is the same condition spelt
for a folder name. The words a user may type for each setting are defined here and nowhere else.

A condition either masks its head set or, with ``window`` set, keeps it: every head outside the kept set then
attends only to the first ``sink`` tokens and the ``window`` most recent positions (DuoAttention's streaming
heads), and the kept heads attend as usual. The kept set is chosen exactly as a masked set is.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field

Head = tuple[int, int]

KINDS = ("none", "explicit", "retrieval", "random")  # in the order reports list them
CHOICES = {
    "mode": ("uniform", "zero", "mean"),
    "phase": ("all", "decode"),
    "unit": ("head", "kv_group"),
    "match": (None, "layer"),
}
MODES, PHASES, UNITS, MATCHES = (CHOICES[name] for name in ("mode", "phase", "unit", "match"))
ARGUMENTS = (  # rh-masked's --model_args
    *("heads", "k", "head_scores", "mode", "phase", "seed", "match", "unit"),
    *("window", "sink", "keep"),
)
_DEFAULTS = (("unit", "head"), ("mode", "uniform"), ("phase", "all"))
SINK = 4  # first tokens a windowed head keeps unless told: StreamingLLM's attention sinks
MEMORY_GB = 2.0  # what the KV-cache rows of conditions evaluated together may take, unless the user says


class ConditionError(ValueError):
    """A condition's arguments are malformed; the message names the argument and the fix."""


@dataclass(frozen=True)
class Condition:
    """One masking or windowed condition; ``none`` for unmasked runs. Random draws at one K differ only in ``seed``.

    ``heads`` holds the listed heads of an ``explicit`` condition, and every masked head once the condition is
    resolved on a model; with ``window`` set it is the kept set instead, and ``kind`` says how it was chosen
    (``none``: every head is windowed). ``head_scores`` names the file a ranking comes from; it is provenance,
    not identity, so the same condition read on two machines compares equal.
    """

    kind: str = "none"  # one of KINDS
    k: int | None = None
    seed: int | None = None  # random only
    match: str | None = None  # random only
    unit: str = "head"
    mode: str = "uniform"
    phase: str = "all"
    heads: tuple[Head, ...] = ()
    head_scores: str | None = field(default=None, compare=False)
    window: int | None = None  # set: the heads are kept whole and every other head sees sinks + this window
    sink: int = SINK

    @classmethod
    def parse(
        cls,
        heads="none",
        k=None,
        head_scores=None,
        mode=None,
        phase=None,
        seed=None,
        match=None,
        unit=None,
        window=None,
        sink=None,
        keep=None,
    ):
        """The condition that ``--model_args`` (strings from the CLI, values from a dict) or a suite describe.

        Everything that can be checked without the model is checked here; ``none`` always means the default.
        """
        window, sink = _as_count("window", window), _as_count("sink", sink, minimum=0)
        if window is None:
            for name, value in (("keep", keep), ("sink", sink)):
                if not _is_none(value):
                    raise ConditionError(f"{name}= applies only to a windowed condition; add window=W or drop it.")
            spec, argument = heads, "heads"
        else:
            if not _is_none(heads):
                raise ConditionError(
                    "heads= masks heads and window= windows every head but a kept set; one condition does one. "
                    "Name the heads a window spares with keep=, or drop window= to mask."
                )
            if not _is_none(mode) and str(mode).strip().lower() != "uniform":
                raise ConditionError(f"mode={mode} is meaningless with window=: windowed heads are not masked.")
            spec, argument = keep, "keep"
        kind, listed = _parse_heads(spec, argument)
        k, seed = _as_count("k", k), _as_count("seed", seed, minimum=0)
        words = {name: _as_word(name, value) for name, value in dict(mode=mode, phase=phase, unit=unit).items()}
        match = _as_word("match", match)
        windowed = {} if window is None else {"window": window, "sink": SINK if sink is None else sink}
        if kind == "none":
            if k is not None:
                raise ConditionError(
                    f"k is meaningless with {argument}=none; drop it or choose {argument}=retrieval/random."
                )
            return cls(phase=words["phase"] or "all", **windowed) if windowed else cls()
        if kind == "explicit" and k is not None:
            raise ConditionError("k is meaningless with an explicit head list.")
        if match is not None and kind != "random":
            raise ConditionError(f"match=layer applies only to {argument}=random.")
        return cls(
            kind=kind,
            k=k,
            seed=(seed or 0) if kind == "random" else None,
            match=match,
            heads=listed,
            head_scores=None if _is_none(head_scores) else str(head_scores),
            **{name: value for name, value in words.items() if value is not None},
            **windowed,
        )

    @classmethod
    def from_record(cls, masking: dict) -> Condition:
        """The condition a results file records in ``config.rh_masking`` (see :meth:`record`)."""
        kind = masking.get("heads_kind", "none")
        window = masking.get("window")
        windowed = {} if window is None else {"window": window, "sink": masking.get("sink", SINK)}
        if kind == "none":
            return cls(phase=masking.get("phase") or "all", **windowed) if windowed else cls()
        return cls(
            kind=kind,
            k=masking.get("k"),
            seed=masking.get("seed") if kind == "random" else None,
            match=masking.get("match"),
            unit=masking.get("unit") or "head",
            mode=masking.get("mode") or "uniform",
            phase=masking.get("phase") or "all",
            heads=tuple(sorted(tuple(h) for h in masking.get("heads") or ())),
            head_scores=masking.get("head_scores"),
            **windowed,
        )

    def record(self) -> dict:
        """What a results file keeps of the condition in ``config.rh_masking``; :meth:`from_record` reads it.

        A windowed condition records its kept heads under ``heads`` and adds ``window`` and ``sink``.
        """
        if self.window is not None:
            return {
                "heads_kind": self.kind,
                "k": self.k,
                "seed": self.seed,
                "match": self.match,
                "unit": self.unit,
                "num_kept": len(self.heads),
                "heads": [list(h) for h in self.heads],
                "phase": self.phase,
                "window": self.window,
                "sink": self.sink,
            }
        return {
            "heads_kind": self.kind,
            "k": self.k,
            "seed": self.seed,
            "match": self.match,
            "unit": self.unit,
            "num_masked": len(self.heads),
            "heads": [list(h) for h in self.heads],
            "mode": self.mode,
            "phase": self.phase,
        }

    @property
    def qualifiers(self) -> list[str]:
        """The window, then the settings that differ from the defaults, as reports append them in brackets."""
        window = (
            [] if self.window is None else [f"w={self.window}"] + ([f"sink={self.sink}"] if self.sink != SINK else [])
        )
        return window + [getattr(self, name) for name, default in _DEFAULTS if getattr(self, name) != default]

    @property
    def keep(self) -> str:
        """``keep `` before the head set of a windowed condition, so that no label reads as a masked set."""
        return "" if self.window is None else "keep "

    @property
    def series(self) -> str:
        """The label without K or seed: the conditions a K sweep draws as one line."""
        name = "explicit" if self.kind == "explicit" else f"{self.kind}{'-layer' if self.match == 'layer' else ''}"
        return self.keep + name + (f" [{', '.join(self.qualifiers)}]" if self.qualifiers else "")

    @property
    def pool_label(self) -> str:
        """The label without the seed: random draws at the same K (and settings) pool under it."""
        if self.kind == "none":
            return self.series
        if self.kind == "explicit":
            name = "explicit[" + ",".join(f"{l}.{h}" for l, h in self.heads[:4])
            name += f",…{len(self.heads)} heads]" if len(self.heads) > 4 else "]"
        else:
            name = f"{self.kind}{'-layer' if self.match == 'layer' else ''}@{self.k}"
        return self.keep + name + (f" [{', '.join(self.qualifiers)}]" if self.qualifiers else "")

    @property
    def label(self) -> str:
        return self.pool_label + (f"/seed={self.seed}" if self.kind == "random" else "")

    @property
    def name(self) -> str:
        """Folder name of a suite's condition: window, kind, K and seed (a suite shares the other settings)."""
        window = ""
        if self.window is not None:
            window = f"window{self.window}-" + (f"sink{self.sink}-" if self.sink != SINK else "")
        if self.kind == "none":
            return window + "none"
        return window + f"{self.kind}-k{self.k}" + (f"-seed{self.seed}" if self.seed is not None else "")

    @property
    def is_variant(self) -> bool:
        """Layer-matched, or any setting other than the default: reports prefer the plain condition."""
        return self.match == "layer" or bool(self.qualifiers)

    @property
    def sort_key(self) -> tuple:
        """Masking conditions first, as always; then windowed ones by window, sinks and kept set."""
        return (
            self.window is not None,
            self.window or 0,
            self.sink,
            KINDS.index(self.kind),
            self.k or 0,
            self.match or "",
            self.unit,
            self.mode,
            self.phase,
            self.seed if self.seed is not None else -1,
            self.heads,
        )


def check_choice(name: str, value) -> None:
    """Raise :class:`ConditionError` unless ``value`` is one of the words ``name`` takes."""
    if value not in CHOICES[name]:
        words = ", ".join(str(choice) for choice in CHOICES[name] if choice is not None)
        raise ConditionError(f"{name}={value!r} is unknown; choose one of {words}.")


def refuse_misspelt(arguments, known) -> None:
    """An argument spelt like one of the condition's (``head=``, ``mdoe=``) and not ``known`` elsewhere is a
    typo: refuse it with the closest name, rather than hand it on to where it fails obscurely or not at all."""
    for key in arguments:
        near = difflib.get_close_matches(key, ARGUMENTS, n=1, cutoff=0.75)
        if near and key not in ARGUMENTS and key not in known:
            raise ConditionError(f"rh-masked has no argument {key!r}; did you mean {near[0]!r}?")


def _parse_heads(value, argument: str = "heads") -> tuple[str, tuple[Head, ...]]:
    """``heads=`` (or ``keep=``) as lm-eval hands it over: a keyword, or a list (already parsed, or still a string)."""
    if _is_none(value):
        return "none", ()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("retrieval", "random"):
            return text.lower(), ()
        if not text.startswith("["):
            raise ConditionError(
                f"{argument}={value!r} is not understood; use none, retrieval, random, or a list of "
                "[layer, query_head] pairs such as [[3,5],[7,1]]."
            )
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConditionError(f"{argument}={value!r} is not a valid list such as [[3,5],[7,1]].") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(h, (list, tuple)) for h in value):
        raise ConditionError(
            f"{argument}={value!r} must be none, retrieval, random, or a list of [layer, query_head] pairs."
        )
    for head in value:
        if len(head) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in head):
            raise ConditionError(f"A head is a pair of integers (layer, query_head); got {head!r}.")
    return "explicit", tuple(sorted({tuple(head) for head in value}))


def _is_none(value) -> bool:
    """``none`` as lm-eval hands it over: ``None`` from its argument parser, the string from its CLI."""
    return value is None or (isinstance(value, str) and value.strip().lower() == "none")


def _as_count(name: str, value, minimum: int = 1) -> int | None:
    """An integer argument as lm-eval hands it over: int, integral float, or digit string (``none`` stays)."""
    if _is_none(value):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConditionError(f"{name}={value!r} must be {kind}.")
    return value


def _as_word(name: str, value) -> str | None:
    """A keyword argument from :data:`CHOICES`; ``none`` means the default (``None``)."""
    if _is_none(value):
        return None
    word = value.strip().lower() if isinstance(value, str) else value
    check_choice(name, word)
    return word
