"""devcloud: a local OpenStack (real Keystone, Glance, Cinder; emulated Nova) for stackvault's tests.

Not part of the installed product. See ARCHITECTURE.md for the contract between its parts and
README.md for how to use it.
"""
