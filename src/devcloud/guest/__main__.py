"""`python -m devcloud.guest build [--cache-dir DIR]`: build the guest images now and print them as JSON.

Useful to warm the cache before a test run (the first build downloads the kernel package and takes
a few seconds; later runs only hash their inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from devcloud.guest import images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcloud.guest")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) the guest images and print them as JSON")
    build.add_argument("--cache-dir", default=os.environ.get("DEVCLOUD_GUEST_CACHE") or str(images.DEFAULT_CACHE_DIR))
    args = parser.parse_args(argv)
    cache = Path(args.cache_dir)
    try:
        built = images.build_all(cache)
        boot = images.boot_files(cache)
    except images.ImageBuildError as exc:
        print(f"devcloud.guest: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({
        "images": [{"name": i.name, "path": str(i.path), "disk_format": i.disk_format,
                    "container_format": i.container_format, "properties": i.properties} for i in built],
        "kernel": str(boot.kernel), "initrd": str(boot.initrd), "cmdline": boot.cmdline,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
