"""A real OpenStack Swift all-in-one on loopback, serving the Swift and S3 APIs at once.

For stackvault's S3 and Swift repository tests and benchmarks: `SwiftAllInOne(state_dir).start()`
(launch.py) runs memcached, the account, container and object servers and the proxies from
PyPI `swift` in its own virtualenv (venv.py), with configuration and rings for one device
generated under the state dir (config.py); `keystone.py` registers the Keystone-authenticated
proxy in a dev cloud's catalog. `python -m devcloud.swift up|down|env` drives it by hand.
"""

from devcloud.swift.launch import SwiftAllInOne

__all__ = ["SwiftAllInOne"]
