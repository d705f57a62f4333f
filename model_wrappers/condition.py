"""A masking condition: which heads one ``rh-masked`` configuration masks, and how. Suite and report share it.

Results record a condition in ``config.rh_masking`` (see :meth:`RHMaskedLM.get_model_info`); a suite names one
before it runs, the report reads one back. Its :attr:`~Condition.label` is how reports show it, and its
:attr:`~Condition.name` is the same condition spelt for a folder name.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("none", "explicit", "retrieval", "random")  # in the order reports list them
_DEFAULTS = (("unit", "head"), ("mode", "uniform"), ("phase", "all"))
MEMORY_GB = 2.0  # what the KV-cache rows of conditions evaluated together may take, unless the user says


@dataclass(frozen=True)
class Condition:
    """One masking condition; ``none`` for unmasked runs. Random draws at one K differ only in ``seed``."""

    kind: str  # one of KINDS
    k: int | None = None
    seed: int | None = None  # random only
    match: str | None = None
    unit: str = "head"
    mode: str = "uniform"
    phase: str = "all"
    heads: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_record(cls, masking: dict) -> Condition:
        """The condition a results file records in ``config.rh_masking`` (written by ``rh-masked``)."""
        kind = masking.get("heads_kind", "none")
        if kind == "none":
            return cls("none")
        return cls(
            kind=kind,
            k=masking.get("k"),
            seed=masking.get("seed") if kind == "random" else None,
            match=masking.get("match"),
            unit=masking.get("unit") or "head",
            mode=masking.get("mode") or "uniform",
            phase=masking.get("phase") or "all",
            heads=tuple(sorted(tuple(h) for h in masking.get("heads") or ())),
        )

    @property
    def qualifiers(self) -> list[str]:
        """The settings that differ from the defaults, as reports append them in brackets."""
        return [getattr(self, name) for name, default in _DEFAULTS if getattr(self, name) != default]

    @property
    def series(self) -> str:
        """The label without K or seed: the conditions a K sweep draws as one line."""
        name = "explicit" if self.kind == "explicit" else f"{self.kind}{'-layer' if self.match == 'layer' else ''}"
        return name + (f" [{', '.join(self.qualifiers)}]" if self.qualifiers else "")

    @property
    def pool_label(self) -> str:
        """The label without the seed: random draws at the same K (and settings) pool under it."""
        if self.kind == "none":
            return "none"
        if self.kind == "explicit":
            name = "explicit[" + ",".join(f"{l}.{h}" for l, h in self.heads[:4])
            name += f",…{len(self.heads)} heads]" if len(self.heads) > 4 else "]"
        else:
            name = f"{self.kind}{'-layer' if self.match == 'layer' else ''}@{self.k}"
        return name + (f" [{', '.join(self.qualifiers)}]" if self.qualifiers else "")

    @property
    def label(self) -> str:
        return self.pool_label + (f"/seed={self.seed}" if self.kind == "random" else "")

    @property
    def name(self) -> str:
        """Folder name of a suite's condition: kind, K and seed (a suite shares the other settings)."""
        if self.kind == "none":
            return "none"
        return f"{self.kind}-k{self.k}" + (f"-seed{self.seed}" if self.seed is not None else "")

    @property
    def is_variant(self) -> bool:
        """Layer-matched, or any setting other than the default: reports prefer the plain condition."""
        return self.match == "layer" or bool(self.qualifiers)

    @property
    def sort_key(self) -> tuple:
        return (
            KINDS.index(self.kind),
            self.k or 0,
            self.match or "",
            self.unit,
            self.mode,
            self.phase,
            self.seed if self.seed is not None else -1,
            self.heads,
        )
