"""The devicetrust agent: the device half of every ceremony.

It keeps the device's key pairs (which never leave the device), answers
challenges from the service on a loopback-only local channel and by direct
callback, and reports posture facts. Ceremonies mirror the service:
``agent/enroll.py`` <-> ``idp_service/devices/enroll.py``,
``agent/authenticate.py`` <-> ``idp_service/signin/authenticate.py``.
"""

__version__ = "0.1.0"
