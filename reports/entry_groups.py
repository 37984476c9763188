"""How a report with many entries groups them: by kind (backbones, baselines, ensembles, then any
other kind, e.g. derived test-time-augmentation entries), by architecture family within the
backbones, and which entries the comparison figures show (the top ones plus the reference).

Families and `--models` groups are what the trainer recorded in each entry's metrics.json
("family", "group"; training.entries); this layer does not read the zoo or the training code. An
entry that records no family (a run made before they were recorded, hand-made prediction files)
takes the family of the entry it derives from (`<entry>+<suffix>` takes `<entry>`'s) when that
one records it, else `OTHER_FAMILY`. Pure functions, no drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reports.results import Entry

# The known kinds, in the order the report shows them ("tta": the derived `<entry>+tta<N>`
# entries, training.tta); any other kind follows, in the order of its best-ranked entry, in a
# group of its own.
KIND_ORDER = ("backbone", "baseline", "ensemble", "tta")
KIND_TITLES = {"backbone": "Backbones", "baseline": "Baselines", "ensemble": "Ensembles",
               "tta": "Test-time augmentation"}
KIND_WORDS = {"backbone": ("backbone", "backbones"), "baseline": ("baseline", "baselines"),
              "ensemble": ("ensemble", "ensembles"), "tta": ("TTA entry", "TTA entries")}
OTHER_FAMILY = "other"
NOT_RECORDED_GROUP = "n/a"
# The comparison figures (ranking chart, macro ROC) show this many best entries plus the
# reference; a second figure shows every entry when some are left out.
FIGURE_TOP = 8
DERIVED_SEPARATOR = "+"


def kind_title(kind: str) -> str:
    """The heading of a kind's group: "Backbones", "Baselines", "Ensembles", "Test-time
    augmentation", or for any other kind "Entries of kind `<kind>`"."""
    return KIND_TITLES.get(kind, f"Entries of kind `{kind}`")


def _recorded(entry: Entry, key: str) -> str | None:
    value = entry.metrics.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def entry_family(entry: Entry, by_name: dict[str, Entry] | None = None) -> str:
    """The entry's architecture family: its metrics.json "family"; else, for a derived entry
    `<base>+<suffix>`, the family `<base>` records (when `by_name` holds it); else "other".

    Args:
        entry: the entry.
        by_name: the run's entries by name (for the derived-entry fallback).

    Returns:
        The family name.
    """
    family = _recorded(entry, "family")
    if family is not None:
        return family
    if by_name and DERIVED_SEPARATOR in entry.name:
        base = by_name.get(entry.name.split(DERIVED_SEPARATOR, 1)[0])
        if base is not None and base is not entry and (family := _recorded(base, "family")):
            return family
    return OTHER_FAMILY


def entry_group(entry: Entry) -> str:
    """The entry's `--models` group as its metrics.json records it ("paper", "modern", ...), or
    "n/a"."""
    return _recorded(entry, "group") or NOT_RECORDED_GROUP


@dataclass
class FamilyRows:
    """The entries of one family (or of a whole kind that is not split by family).

    Attributes:
        family: the family name (None: the kind is not split by family).
        rows: (rank in the whole ranking, entry), best first.
    """

    family: str | None
    rows: list[tuple[int, Entry]] = field(default_factory=list)


@dataclass
class KindGroup:
    """The entries of one kind, best first, split by family for the backbones.

    Attributes:
        kind: "backbone", "baseline", "ensemble" or any other recorded kind.
        title: its heading (`kind_title`).
        families: the families, ordered by their best entry (one `FamilyRows` with family None
            for a kind not split by family).
    """

    kind: str
    title: str
    families: list[FamilyRows]

    @property
    def size(self) -> int:
        """The number of entries in the group."""
        return sum(len(f.rows) for f in self.families)


def group_ranked(ranked: Sequence[Entry], by_family: Sequence[str] = ("backbone",)) -> list[KindGroup]:
    """The ranked entries grouped by kind, and by family within the kinds of `by_family`.

    Kinds come in `KIND_ORDER`, then unknown kinds in the order of their best entry; families in
    the order of their best entry; entries keep their ranking order and their overall rank. A
    kind none of whose entries records a family (a run made before families were recorded) is
    not split.

    Args:
        ranked: the entries, best first.
        by_family: the kinds whose entries are split by family.

    Returns:
        One `KindGroup` per kind present.
    """
    by_name = {e.name: e for e in ranked}
    kinds: dict[str, list[tuple[int, Entry]]] = {}
    for rank, entry in enumerate(ranked, 1):
        kinds.setdefault(entry.kind, []).append((rank, entry))
    order = [k for k in KIND_ORDER if k in kinds] + [k for k in kinds if k not in KIND_ORDER]
    groups = []
    for kind in order:
        families: dict[str, FamilyRows] = {}
        for rank, entry in kinds[kind]:
            family = entry_family(entry, by_name)
            families.setdefault(family, FamilyRows(family)).rows.append((rank, entry))
        if kind in by_family and set(families) != {OTHER_FAMILY}:
            split = list(families.values())
        else:  # not split, or no entry of the kind records a family (an older run)
            split = [FamilyRows(None, kinds[kind])]
        groups.append(KindGroup(kind, kind_title(kind), split))
    return groups


def figure_entries(ranked: Sequence[Entry], reference: str, top: int = FIGURE_TOP) -> list[Entry]:
    """The entries a comparison figure shows: the `top` best, plus the reference when it is
    ranked lower (so at most `top` + 1), in ranking order.

    Args:
        ranked: the entries, best first.
        reference: the reference entry's name (left out when not ranked).
        top: how many of the best entries.

    Returns:
        The chosen entries, best first.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    return [e for i, e in enumerate(ranked) if i < top or e.name == reference]


def kind_counts(ranked: Sequence[Entry]) -> str:
    """"12 backbones, 2 baselines, 4 ensembles, 4 TTA entries, 1 of kind `x`": the entries per
    kind, in the order of `group_ranked`."""
    parts = []
    for group in group_ranked(ranked, by_family=()):
        singular, plural = KIND_WORDS.get(group.kind, (f"of kind `{group.kind}`",) * 2)
        parts.append(f"{group.size} {singular if group.size == 1 else plural}")
    return ", ".join(parts)
