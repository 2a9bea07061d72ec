"""What `ai` adds to the one catalogue of classes (`acquisition.catalogue`, re-exported by `acquisition`).

The 23 cell classes, the critical forms, the M:E series and the quality classes are defined once, as
data, in `acquisition` and used under the same names everywhere (`CLASS_CODES`, `CRITICAL_CODES`,
`GRANULOCYTIC_CODES`, `ERYTHROID_CODES`, `NOT_CLASSED_CODES`, `QUALITY_CLASSES`). `ai` adds only what
is its own: the review bin for low-confidence cells and the quality classes that count as good for the
scan list. Trained models carry their own `classes` in the model card; the inference API answers with those.
"""

from __future__ import annotations

#: Review bin for cells whose top probability is below the model card's confidence threshold.
UNIDENTIFIED = "UNIDENTIFIED"

#: Overview grid tiles of these quality classes may go on the 40x scan list.
GOOD_QUALITY: tuple[str, ...] = ("optimal", "acceptable")
