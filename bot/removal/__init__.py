"""Safe removal: approved findings become reversible, recorded changes in AWS."""

from bot.removal.history import history
from bot.removal.service import (
    ApplyReport,
    ChangeResult,
    apply_approved,
    may_undo,
    undo_change,
)

__all__ = [
    "ApplyReport",
    "ChangeResult",
    "apply_approved",
    "history",
    "may_undo",
    "undo_change",
]
