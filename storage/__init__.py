"""Durable file store and SQL index of studies, series, instances and findings."""
