"""The keys the engine makes are the keys docs/repository-format.md lists, byte for byte.

A key is part of the format: a repository written by one version is read by another, or by a
stranger holding the document alone. So every row of the document's key table is made here from
engine/layout.py and checked against the row's pattern, and the exact spelling of each is pinned.
"""

import re
from pathlib import Path

import pytest

from stackvault.engine import layout
from stackvault.engine.crypto import PLAIN_KEYS, PLAIN_PREFIXES
from stackvault.engine.manifest import new_backup_id
from stackvault.storage.keys import check_key

FORMAT_DOC = Path(__file__).resolve().parents[2] / "docs" / "repository-format.md"
BACKUP = "20261201T000000000Z-abcdef"
DIGEST = bytes(range(32))
HEX = DIGEST.hex()

#: Each row of the document's table, and the key the engine makes for it, as it must be spelled.
MADE = {
    "config": (layout.CONFIG, "config"),
    "keys/<id>.json": (layout.slot_key("0123456789abcdef"), "keys/0123456789abcdef.json"),
    "chunks/<h2>/<h64>": (layout.chunk_key(DIGEST), f"chunks/{HEX[:2]}/{HEX}"),
    "packs/<h2>/<h64>": (layout.pack_key(DIGEST), f"packs/{HEX[:2]}/{HEX}"),
    "index/<h64>": (layout.chunk_index_key(DIGEST), f"index/{HEX}"),
    "chunks/<h2>/<h64>.bad": (layout.chunk_key(DIGEST) + layout.DAMAGED_SUFFIX, f"chunks/{HEX[:2]}/{HEX}.bad"),
    "indexes/<backup>/<n>.fidx": (layout.index_key(BACKUP, 3), f"indexes/{BACKUP}/3.fidx"),
    "backups/<backup>.json": (layout.backup_key(BACKUP), f"backups/{BACKUP}.json"),
    "proofs/<backup>.json": (layout.proof_key(BACKUP), f"proofs/{BACKUP}.json"),
    "forgotten/<backup>": (layout.tombstone_key(BACKUP), f"forgotten/{BACKUP}"),
    "proxy-state/<time>.tar.zst": (layout.proxy_state_key("20261201T101500Z"), "proxy-state/20261201T101500Z.tar.zst"),
    "locks/<t>-<rand>.json": (layout.lock_key("1764583200-0badc0de"), "locks/1764583200-0badc0de.json"),
}


def documented_keys() -> list[str]:
    """The first cell of every row of the key table (`| key | what | written |`)."""
    rows = re.findall(r"^\| `([^`]+)` \|", FORMAT_DOC.read_text(), re.MULTILINE)
    assert rows, f"no key table found in {FORMAT_DOC}"
    return rows


def pattern(documented: str) -> re.Pattern[str]:
    """`chunks/<h2>/<h64>` -> a regex where each `<...>` is one or more characters of one component."""
    parts = re.split(r"<[^>]+>", documented)
    return re.compile("[^/]+".join(map(re.escape, parts)))


def test_the_engine_makes_a_key_for_every_row_of_the_format_document():
    assert sorted(documented_keys()) == sorted(MADE)


@pytest.mark.parametrize("documented", sorted(MADE))
def test_each_key_is_spelled_as_the_format_document_says(documented):
    made, spelled = MADE[documented]
    assert made == spelled
    assert pattern(documented).fullmatch(made), f"{made} does not match {documented}"
    assert check_key(made) == made


def test_the_chunk_folder_is_the_first_two_hex_digits_of_the_id():
    assert layout.chunk_key(DIGEST).startswith(layout.chunk_folder(DIGEST[0]))
    assert layout.chunk_folder(0xAB) == "chunks/ab/"


def test_only_the_config_and_key_slots_are_stored_unsealed():
    assert PLAIN_KEYS == ("config",) and PLAIN_PREFIXES == ("keys/",)


def test_ids_are_read_back_from_listed_keys_and_foreign_objects_are_none():
    bid = new_backup_id()
    assert layout.backup_id_of(layout.backup_key(bid)) == bid
    assert layout.proof_id_of(layout.proof_key(bid)) == bid
    assert layout.proxy_state_id_of(layout.proxy_state_key("20261201T101500Z")) == "20261201T101500Z"
    assert layout.slot_id_of(layout.slot_key("0123456789abcdef")) == "0123456789abcdef"
    for foreign in ("backups/README", "backups/x.json.tmp", "proofs/notes.txt", "chunks/ab/cd.json"):
        assert layout.backup_id_of(foreign) is None and layout.proof_id_of(foreign) is None
    assert layout.proxy_state_id_of("proxy-state/old.tar") is None


def test_only_a_chunk_key_names_a_chunk():
    key = layout.chunk_key(DIGEST)
    assert layout.chunk_id_of(key) == DIGEST
    for other in (key + layout.DAMAGED_SUFFIX, f"chunks/{HEX[:2]}/{HEX.upper()}", f"chunks/ff/{HEX}",
                  f"chunks/{HEX[:2]}/.tmp-0123456789ab-x.tmp", f"chunks/{HEX}"):
        assert layout.chunk_id_of(other) is None, other
