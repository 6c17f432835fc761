"""Fixtures of the template tests: a second editor (approvals must come from someone else)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def other_editor(engine: Any) -> dict[str, str]:
    """A second editor key (approvals must come from someone else)."""
    from service.db import open_session
    from service.keys.models import Role
    from service.keys.service import create_key

    with open_session(write=True) as session:
        created = create_key(session, name="reviewer", role=Role.editor)
    return {"Authorization": f"Bearer {created.key}"}
