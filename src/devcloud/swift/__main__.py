"""`python -m devcloud.swift [--state-dir DIR] up|down|env`: the Swift all-in-one by hand.

`env` prints the shell variables for both APIs (boto3's AWS_* and the swift CLI's ST_*), e.g.
`eval "$(python -m devcloud.swift env)"`. The state dir defaults to `<repo>/.state/swift`
(env DEVCLOUD_SWIFT_STATE).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from devcloud.context import DevcloudError
from devcloud.swift.launch import DEFAULT_STATE_DIR, SwiftAllInOne


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcloud.swift")
    parser.add_argument("--state-dir", default=os.environ.get("DEVCLOUD_SWIFT_STATE",
                                                               str(DEFAULT_STATE_DIR)))
    parser.add_argument("command", choices=("up", "down", "env"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    swift = SwiftAllInOne.load(args.state_dir)
    try:
        if args.command == "up":
            swift.start()
        elif args.command == "down":
            print("stopped:", ", ".join(swift.stop()) or "nothing")
        else:
            for key, value in {**swift.s3_env(), **swift.tempauth_env()}.items():
                print(f"export {key}={shlex.quote(value)}")
    except DevcloudError as exc:
        print(f"devcloud.swift: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
