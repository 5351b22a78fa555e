"""Scheduling: work leases shared by replicas, and the daemon's jobs."""
