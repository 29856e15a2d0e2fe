"""The devicetrust agent: the process on each laptop that answers the service.

:mod:`agent.collectors` gathers this device's posture facts.
"""
