"""Monitoring: the rules a config must satisfy and the values our alert chart receives."""
