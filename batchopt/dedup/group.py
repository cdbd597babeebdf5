"""A semantic group's members as the clustering loop (`semantic._cluster`) sees them: the guards
that are not transitive are checked against all of them, not only the representative."""

from __future__ import annotations

from batchopt.dedup.facts import Facts, GuardConfig
from batchopt.dedup.guards import opposed


class Group:
    """What a group's members say, for the guards that are not transitive.

    Equal numbers, amounts, codes, dates and negation with the representative mean equal with
    every member. Names, opposites and actions are not ("Nomad" must appear in the other text;
    "large" against "small"; A asks to cancel, B to refund, the representative for both), so
    A~rep and B~rep can still clash: a joining row is checked against the names all members
    share and every member's opposites and actions.
    """

    def __init__(self, representative: Facts) -> None:
        self.size = 1
        self.names = set(representative.entities)
        self.common_words = set(representative.words.split())
        self.opposites = {representative.opposites}
        self.actions = {representative.actions}

    def refuses(self, row: Facts, guards: GuardConfig) -> str | None:
        """The guard that keeps `row` out of the group, else None."""
        if self.size == 1:
            return None  # the pair with the representative has passed `veto` already
        if guards.opposites and any(opposed(row.opposites, o) for o in self.opposites):
            return "opposites"
        if guards.actions and any((row.actions - a) and (a - row.actions) for a in self.actions):
            return "actions"
        if guards.entities:
            row_words = set(row.words.split())
            own = {part for name in row.entities for part in name.split()}
            others = {part for name in self.names for part in name.split()}
            if not own <= self.common_words or not others <= row_words:
                return "entities"
        return None

    def add(self, row: Facts) -> None:
        """`row` joins the group."""
        self.size += 1
        self.names |= row.entities
        self.common_words &= set(row.words.split())
        self.opposites.add(row.opposites)
        self.actions.add(row.actions)
