"""The HTTP edge shared by every feature: errors to HTTP, bodies, headers, rate limits.

Feature ``web`` modules build on it; service modules never import it.
"""
