"""Seeing what happened: Prometheus metrics read from the catalog, and notifications when jobs end.

Nothing here runs a job or writes the catalog: metrics are computed from the catalog's rows at each
scrape (so they are always the catalog's numbers, whichever proxy wrote them), and notifications are
sent from what a finished job reports.
"""
