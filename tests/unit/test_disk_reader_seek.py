"""DiskReader's SEEK_DATA / SEEK_HOLE answers, from the block index alone: data starts where the
first stored block at or after the offset starts, a hole where the run of stored blocks ends (the
disk's end is a hole), block-granular, never before the offset asked."""

from __future__ import annotations

from test_disk_reader import BLOCK, BLOCKS, DISK, _backup

from stackvault.engine.diskreader import DiskReader


def test_data_and_holes_follow_the_index() -> None:
    repo, index, _disk = _backup((3, 4, 5, 20, BLOCKS - 1))
    with DiskReader(repo, index) as reader:
        assert reader.data_from(0) == 3 * BLOCK
        assert reader.data_from(4 * BLOCK + 17) == 4 * BLOCK + 17, "inside data: the offset itself"
        assert reader.data_from(6 * BLOCK) == 20 * BLOCK
        assert reader.hole_from(0) == 0, "a hole: the offset itself"
        assert reader.hole_from(3 * BLOCK + 5) == 6 * BLOCK, "the end of the run of data"
        assert reader.hole_from(20 * BLOCK) == 21 * BLOCK
        assert reader.hole_from((BLOCKS - 1) * BLOCK) == DISK, "the disk's end is a hole"
        assert reader.fetched == 0, "answered from the index, not the repository"


def test_only_holes_after_the_last_data() -> None:
    repo, index, _disk = _backup((0,))
    with DiskReader(repo, index) as reader:
        assert reader.data_from(BLOCK) is None
        assert reader.hole_from(0) == BLOCK
