"""Object keys: every key the code makes is valid; no key a forged record could name escapes a directory."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackvault.engine.layout import backup_key, chunk_key, index_key
from stackvault.engine.manifest import new_backup_id
from stackvault.storage.keys import InvalidKeyError, check_key


def test_the_keys_the_repository_makes_are_valid():
    bid = new_backup_id()
    for key in (chunk_key(bytes(range(32))), backup_key(bid), index_key(bid, 3), "config", "locks/1-ab.json",
                "keys/0123abcd.json", f"proofs/{bid}.json"):
        assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "/etc/passwd", "indexes/../../x", "indexes/./x", "a//b", "a/", "..",
                                 "a/b\n", "a\0b", "a/b c", "ü", 7, None, "a/" * 600])
def test_crafted_keys_are_refused(key):
    with pytest.raises(InvalidKeyError, match="invalid object key"):
        check_key(key)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_a_valid_key_never_leaves_its_directory(key):
    try:
        check_key(key)
    except InvalidKeyError:
        return
    parts = key.split("/")
    assert not key.startswith("/") and all(p and p not in (".", "..") for p in parts)
