"""The classes a scored model is compared within, so that no comparison flatters.

- recurrent: one recurrent model, fixed after training (no mixture, no ensemble);
- combined: recurrent models mixed with a counting model, or several seeds' models averaged;
- dynamic: a recurrent model that keeps learning from the text it scores (dynamic evaluation);
- counting static: n-grams fit on the training text;
- counting adaptive: counting models whose counts grow with the text they score (PPMd, refitted n-grams).

A model is compared with the best counting model (by validation) of the class that learns the same way: the
static classes with counting static, dynamic evaluation with counting adaptive. Dynamic evaluation and adaptive
counting follow one stream by nature: they have no `windows` figure.
"""

from __future__ import annotations

RECURRENT, COMBINED, DYNAMIC = "recurrent", "combined", "dynamic"
COUNTING_STATIC, COUNTING_ADAPTIVE = "counting static", "counting adaptive"
CLASSES = (RECURRENT, COMBINED, DYNAMIC, COUNTING_STATIC, COUNTING_ADAPTIVE)
COUNTING_KINDS = ("ngram", "ppm")
# the counting class each class is measured against
REFERENCE = {
    RECURRENT: COUNTING_STATIC,
    COMBINED: COUNTING_STATIC,
    DYNAMIC: COUNTING_ADAPTIVE,
    COUNTING_STATIC: COUNTING_STATIC,
    COUNTING_ADAPTIVE: COUNTING_ADAPTIVE,
}
STREAM_ONLY = (DYNAMIC, COUNTING_ADAPTIVE)


def class_of(m: dict) -> str:
    """The class of one record entry, from what it is (kind, evaluation, mixture, ensemble), not from its name."""
    if m["kind"] in COUNTING_KINDS:
        return COUNTING_ADAPTIVE if m["evaluation"] == "adaptive" else COUNTING_STATIC
    if m["evaluation"] == "dynamic":
        return DYNAMIC
    if m.get("mixture") is not None or m.get("ensemble") is not None:
        return COMBINED
    return RECURRENT


def best_of(models: dict, klass: str, key: str = "val_loss") -> tuple[str, dict] | None:
    """The entry of a class with the lowest validation figure `key` (its mean), as (name, entry); None when the
    class has none scored so."""
    ms = [(n, m) for n, m in models.items() if class_of(m) == klass and isinstance(m.get(key), dict)]
    return min(ms, key=lambda nm: nm[1][key]["mean"]) if ms else None
