"""The block engine: knows disks as fixed-size blocks and nothing of OpenStack.

Data flows one way: a `DiskSource` yields blocks, the backup pipeline hashes them (BLAKE3), stores
the ones the level asks for as compressed content-addressed chunks, and writes one `BlockIndex` per
disk; a backup record committing the indexes is written last. Working state (`.sha`, `.bmp`) is a
cache of the newest index, rebuilt from the repository whenever it is missing, stale or damaged.
"""
