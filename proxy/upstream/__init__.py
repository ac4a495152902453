"""Forwarding to module upstreams: pooled keep-alive client, header rules, streamed bodies."""
