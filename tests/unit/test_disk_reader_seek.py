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



def test_the_end_of_a_long_run_of_data_is_found_without_walking_its_blocks() -> None:
    """SEEK_HOLE and NBD block status ask where data ends: on a fully written disk of 2**30 blocks (512
    TiB of 512 KiB blocks, one run) that is answered by bisecting the runs at once, where a walk over
    the run's blocks would take Python many minutes. Runs that touch end to end count as one."""
    from array import array

    from stackvault.engine.blockindex import DIGEST_SIZE, BlockIndex

    blocks = 1 << 30
    whole = BlockIndex(512 << 10, blocks * (512 << 10), "b", array("Q", [0]), array("Q", [blocks]),
                       b"", checksum=bytes(32))  # only the runs matter here: no digests held
    assert whole.data_end(0) == blocks and whole.data_end(blocks - 1) == blocks
    touching = BlockIndex(4096, 40 * 4096, "b", array("Q", [2, 5, 9]), array("Q", [3, 4, 1]),
                          bytes(8 * DIGEST_SIZE), checksum=bytes(32))
    assert [touching.data_end(i) for i in (0, 2, 4, 5, 8, 9, 10)] == [0, 10, 10, 10, 10, 10, 10]
