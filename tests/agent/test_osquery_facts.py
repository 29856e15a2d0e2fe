"""osquery is optional: absent for real, and queried over the real osquery Thrift protocol.

osqueryd is not installed here, so the query path is served by a small
in-process Thrift server that implements osquery's ExtensionManager ``query``
call on a real Unix socket. The agent side is the real ``osquery.ExtensionClient``.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.collectors import collect_facts
from agent.collectors.osquery import OsqueryConfig, collect_osquery
from trust_protocol.facts_schema import validate_facts


def test_absent_socket_means_not_available(tmp_path):
    section = collect_osquery(OsqueryConfig(socket_path=str(tmp_path / "osquery.em")))
    assert section == {"available": False, "results": None, "errors": None}


def test_facts_are_complete_without_osquery(tmp_path):
    facts = collect_facts(osquery=OsqueryConfig(socket_path=str(tmp_path / "nope.em")))
    assert facts["osquery"]["available"] is False
    assert validate_facts(facts) == []
    assert facts["disk_encryption"] is not None


@pytest.fixture
def osquery_socket(tmp_path):
    from osquery.extensions import ExtensionManager
    from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus
    from thrift.protocol import TBinaryProtocol
    from thrift.server import TServer
    from thrift.transport import TSocket, TTransport

    tables = {
        "select name, version from os_version;": [{"name": "Debian GNU/Linux", "version": "12"}],
        "select * from big;": [{"n": str(i)} for i in range(2000)],
    }

    class Handler(ExtensionManager.Iface):
        def query(self, sql):
            if sql in tables:
                return ExtensionResponse(ExtensionStatus(code=0, message="OK"), tables[sql])
            return ExtensionResponse(ExtensionStatus(code=1, message="no such table: nope"), [])

        def ping(self):
            return ExtensionStatus(code=0, message="OK")

    path = str(tmp_path / "osquery.em")
    transport = TSocket.TServerSocket(unix_socket=path)
    server = TServer.TSimpleServer(
        ExtensionManager.Processor(Handler()),
        transport,
        TTransport.TBufferedTransportFactory(),
        TBinaryProtocol.TBinaryProtocolFactory(),
    )
    stopping = threading.Event()

    def serve():
        try:
            server.serve()
        except (OSError, AttributeError):  # the socket closed under accept() at teardown
            if not stopping.is_set():
                raise  # pragma: no cover - the server broke while in use

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    for _ in range(50):
        if (tmp_path / "osquery.em").exists():
            break
        time.sleep(0.02)
    yield path
    stopping.set()
    transport.handle.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
    transport.close()
    thread.join(timeout=5)


def test_server_configured_queries_run_through_the_extension_socket(osquery_socket):
    config = OsqueryConfig(
        socket_path=osquery_socket,
        queries={
            "os": "select name, version from os_version;",
            "big": "select * from big;",
            "broken": "select * from nope;",
        },
    )
    section = collect_osquery(config)
    assert section["available"] is True
    assert section["results"]["os"] == [{"name": "Debian GNU/Linux", "version": "12"}]
    assert len(section["results"]["big"]) == 500  # bounded
    assert section["errors"] == {"broken": "no such table: nope"}


def test_osquery_results_land_in_the_fact_document(osquery_socket):
    config = OsqueryConfig(
        socket_path=osquery_socket, queries={"os": "select name, version from os_version;"}
    )
    facts = collect_facts(osquery=config)
    assert facts["osquery"]["results"]["os"][0]["version"] == "12"
    assert validate_facts(facts) == []


def test_dead_socket_is_an_osquery_error_not_a_crash(tmp_path):
    dead = tmp_path / "dead.em"
    dead.write_text("")  # exists, but nothing listens
    section = collect_osquery(
        OsqueryConfig(socket_path=str(dead), timeout=0.3, queries={"q": "select 1;"})
    )
    assert section["available"] is False
    assert "_connect" in section["errors"]
