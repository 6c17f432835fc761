"""CI's fuzz run (.ci/schemathesis.sh) counts an operation never answered with a 2xx as a failure.

An operation whose path names an experiment, metric, layer, template or data source reaches its
handler only with a key that exists: `.ci/fuzz_seed.py` binds every such `{key}` to the seeded
values. A new route without that binding fails CI only by chance (when no random key happens to
exist), so this test names it at once."""

from __future__ import annotations

import json
import re

from tests.support.live import REPO


def test_every_templated_key_of_the_api_is_bound_to_seeded_values() -> None:
    spec = json.loads((REPO / "openapi" / "openapi.json").read_text())
    seed = (REPO / ".ci" / "fuzz_seed.py").read_text()
    bound = set(re.findall(r'^\s*"(/[^"]*\{key\}[^"]*)": "\w+",$', seed, re.MULTILINE))
    bound |= set(re.findall(r"include-path = \"(/[^\"]*\{key\}[^\"]*)\"", seed))
    templated = {p for p in spec["paths"] if "{key}" in p}
    assert templated - bound == set(), "bind these paths' {key} in .ci/fuzz_seed.py (key_of)"
