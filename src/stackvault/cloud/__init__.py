"""OpenStack, through openstacksdk: what to back up, snapshots and their consistency, moving disk data
in and out of the cloud, and restore targets. The engine never imports from here; jobs join the two.

The only package that reaches openstacksdk's service proxies (tests/test_cloud_boundary.py checks it):
jobs call its typed functions, which wait with the SDK's waiters, retry under the one retry policy
(`stackvault.retrying`) and turn the SDK's errors into `CloudError`s that name the fix.
"""
