"""The result type every screening rule returns (docs/BEHAVIOUR.md section 2).

Rules are evaluated cheapest first; a rule that needs pixels runs only on clips that passed the
rules that do not. A rule reports every reason it fails for, and what it measured (``details``,
JSON-serialisable) so that the screening table says what was seen, pass or fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.errors import Reason


@dataclass
class RuleResult:
    rule: str  # stable rule name, recorded in screening.rules_evaluated
    passed: bool
    reasons: list[Reason] = field(default_factory=list)  # empty when passed
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.passed == bool(self.reasons):
            raise ValueError(f"rule {self.rule}: passed={self.passed} contradicts reasons={self.reasons}")
