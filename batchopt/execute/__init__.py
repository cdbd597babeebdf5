"""Sending requests: the response cache, rate limits, retries and the online executor."""
