"""Golden digests: changing the canonical form changes every digest in every run folder, so these are pinned."""

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfimprove.core.canonical import canonical_json, digest, short
from selfimprove.core.records import Policy


def test_golden_digests():
    assert digest({"b": 1, "a": [1, 2.5, "é"], "c": None}) == (
        "sha256:c477124611b850dd90f26bb8dc100fba6b86c64af20a82fde4b7ce752b2d45a4")
    assert digest(b"selfimprove") == "sha256:744700118ce13defe33b2a94ba9cf46e79b1a48b1558278a0557a90d1d1b3967"
    policy = Policy(system_prompt="You are helpful.", model="gpt-4o-mini", temperature=0.2)
    assert policy.digest == "sha256:f4fe79c13298f5ffdf4b73be31827ddf048f315afb22108fa7e55603407f9e51"


def test_canonical_form_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()
    assert short("sha256:abcdef0123456789") == "abcdef012345"


def test_non_finite_and_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})
    with pytest.raises(ValueError):
        canonical_json({"t": dt.datetime(2024, 5, 1)})
    aware = dt.datetime(2024, 5, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert canonical_json(aware) == b'"2024-05-01T00:00:00+00:00"'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_digest_ignores_key_order(value):
    if isinstance(value, dict):
        reordered = dict(reversed(list(value.items())))
        assert digest(reordered) == digest(value)
    import json

    assert json.loads(canonical_json(value)) == value
