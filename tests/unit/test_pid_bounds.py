"""A pid read from a file or a lock object is only asked about when it can name a process: a huge
one made kill(2) raise OverflowError, and 0 or a negative one would ask about process groups."""

import os

import pytest

from stackvault.engine import pids


@pytest.mark.parametrize("pid", [0, -1, -os.getpid(), pids.MAX_PID + 1, 10 ** 30, -(10 ** 30)])
def test_a_pid_no_process_can_have_is_not_alive(pid: int) -> None:
    assert pids.alive(pid) is False


def test_this_process_is_alive() -> None:
    assert pids.alive(os.getpid()) is True
