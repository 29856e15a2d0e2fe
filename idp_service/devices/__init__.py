"""Devices: the enroll, approve and report ceremonies, registration policy, detection.

``web`` holds the agent endpoints (``/agent/v1``); each ceremony has the same
name as its agent half in ``agent/``.
"""
