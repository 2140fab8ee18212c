"""`selfimprove demo`: the whole loop against a local Phoenix and the built-in simulator (or a real endpoint)."""
