"""The read-only HTTP JSON API over the index (``[http]`` section)."""
