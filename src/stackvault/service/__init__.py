"""`stackvault server` and `stackvault run-policy`: scheduling policies from the config.

`schedule` says when a policy is due and at which level (pure functions of the clock), `queue` keeps due
runs and their items in the catalog for every proxy's workers, `policy_run` does one item or finishes
a run with the same job functions as the CLI's backup, prune, gc and verify, and `server` is the
long-running loop around them.
"""
