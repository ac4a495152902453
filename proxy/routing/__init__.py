"""Routing: route definitions (`model`) and the path matcher that resolves requests (`matcher`)."""
