"""Ranged reads (`Backend.get_range`) on every backend, a real Swift over S3 and its own API included:
what a restore of a packed repository reads its chunks with."""

from __future__ import annotations

import os

import pytest

from stackvault.storage import Backend

from .test_conformance import backend  # noqa: F401 - the same backends as the conformance suite


def test_a_range_is_the_bytes_asked_for_and_stops_at_the_end(backend: Backend) -> None:  # noqa: F811
    data = os.urandom(300_000)
    backend.put("packs/ab/pack", data)
    assert backend.get_range("packs/ab/pack", 0, 10) == data[:10]
    assert backend.get_range("packs/ab/pack", 123_456, 65_536) == data[123_456 : 123_456 + 65_536]
    assert backend.get_range("packs/ab/pack", 299_990, 65_536) == data[299_990:], "a range past the end is cut"
    assert backend.get_range("packs/ab/pack", 5, 0) == b""


def test_a_range_of_a_missing_object_is_a_key_error(backend: Backend) -> None:  # noqa: F811
    with pytest.raises(KeyError):
        backend.get_range("packs/ab/none", 0, 10)
