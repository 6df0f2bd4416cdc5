"""OpenStack, through openstacksdk: what to back up, snapshots and their consistency, moving disk data
in and out of the cloud, and restore targets. The engine never imports from here; jobs join the two.
"""
