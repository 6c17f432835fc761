"""The hooks of an experiment's lifecycle: what other domains do at its steps.

The lists start empty; :func:`service.wiring.install_hooks` fills them (templates check
protocols, approval and phases; webhooks, results snapshots and insights hear transitions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from service.auth import Principal
from service.errors import FieldError
from service.experiments.models import Experiment, ExperimentCreate

# Called by start (and the resume of a phase that waited) with (session, row, who): raise to refuse.
StartCheck = Callable[[Session, Experiment, Principal], None]
# Called after every transition with (session, row, action, old status, new status).
TransitionListener = Callable[[Session, Experiment, str, str, str], None]
start_checks: list[StartCheck] = []
transition_listeners: list[TransitionListener] = []

ProtocolHook = Callable[
    [Session, ExperimentCreate, Principal], tuple[ExperimentCreate, str | None, int | None]
]
# Templates register here: (session, protocol, who) -> (protocol with defaults, template, version)
protocol_hooks: list[ProtocolHook] = []
# Called by update_experiment with (session, stored row before the change, merged protocol, names
# of the fields whose value changes, who), before anything is written. A hook raises (422) to
# refuse the update, may change the row (templates clear an approval), and returns a note for the
# update's audit entry, or None.
UpdateHook = Callable[
    [Session, Experiment, ExperimentCreate, frozenset[str], Principal], str | None
]
update_hooks: list[UpdateHook] = []
# Called by new_phase with (session, row, who) before anything is written. A hook may change the
# row (templates clear an approval) and returns why the new phase must wait, or None: a phase
# that waits starts paused and runs once resumed, when every start check passes again.
PhaseHook = Callable[[Session, Experiment, Principal], str | None]
phase_hooks: list[PhaseHook] = []
# Called with (session, create body as sent) when its field rules failed: more problems to report
# in the same 422 (templates: an unknown or unusable template).
ProtocolProblemHook = Callable[[Session, dict[str, Any]], list[FieldError]]
protocol_problem_hooks: list[ProtocolProblemHook] = []
# Called with (session, the protocol's `data_source` key): why that source cannot be named, or
# None (the warehouse domain: an unknown source, product.md §13).
DataSourceCheck = Callable[[Session, str], str | None]
data_source_checks: list[DataSourceCheck] = []
