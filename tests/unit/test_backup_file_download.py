"""A download of a backup's file is refused above the size limit before its first byte, with the
appliance stopped and its slot given back; any guest file name makes a valid Content-Disposition.
(The appliance is replaced here by a stand-in that records `close`: the download's real path, on
the dev cloud, is tests/cloud/test_backup_files_web.py.)"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from flask import Response

from stackvault.api import backup_files
from stackvault.api.faults import ApiError
from stackvault.engine.guestfiles import Entry


class StandIn:
    def __init__(self, size: int) -> None:
        self.entry = Entry("/srv/dump.sql", 0o100644, 0, 0, size, 0)
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_file_over_the_limit_is_413_and_frees_the_appliance(monkeypatch: pytest.MonkeyPatch):
    opened: list[StandIn] = []

    def open_file(*_args: object) -> StandIn:
        opened.append(StandIn(backup_files.DOWNLOAD_MAX + 1))
        return opened[-1]

    monkeypatch.setattr(backup_files, "_visible", lambda _within, ref: ref)
    monkeypatch.setattr(backup_files, "service", lambda: type("Svc", (), {"context": lambda self: None})())
    monkeypatch.setattr(backup_files.file_download, "open_file", open_file)
    for _ in range(backup_files.APPLIANCES + 1):  # more than the slots: each refusal gave its slot back
        with pytest.raises(ApiError) as refused:
            backup_files.file_response(None, "b1", "/srv/dump.sql", None)  # type: ignore[arg-type]  # scope unused here
        assert refused.value.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        assert refused.value.message == (f"/srv/dump.sql is 256.0 MiB ({backup_files.DOWNLOAD_MAX + 1} bytes), "
                                         "more than the 256.0 MiB a download may hold")
    assert [s.closed for s in opened] == [1] * (backup_files.APPLIANCES + 1)


@pytest.mark.parametrize(("name", "ascii_name"), [("hostname", "hostname"), ("résumé.txt", "resume.txt"),
                                                  ("a\nb\"c;.conf", 'a_b\\"c;.conf')])
def test_any_guest_name_makes_one_valid_header(name: str, ascii_name: str):
    response = Response()
    response.headers.set("Content-Disposition", "attachment", **backup_files._download_names(name))
    header = response.headers["Content-Disposition"]
    assert "\n" not in header
    assert header.startswith("attachment; filename=") and ascii_name in header
    assert header.endswith("filename*=UTF-8''" + __import__("urllib.parse").parse.quote(name, safe=""))
