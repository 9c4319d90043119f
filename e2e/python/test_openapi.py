"""The HTTP API against its OpenAPI document: schemathesis loads and validates the document,
generates requests from it (bounded run) and checks that no answer is a server error and every
answer matches the documented status codes and schemas."""
import pathlib
import subprocess

from conftest import RunningServer

KEY = "schemathesis-key-123456"


def test_api_conforms_to_its_openapi_document():
    server = RunningServer("switchboard", env={"SWITCHBOARD_API_KEYS": KEY})
    try:
        st = pathlib.Path(__file__).resolve().parents[2] / ".venv" / "bin" / "st"
        run = subprocess.run(
            [
                str(st), "run", f"{server.url}/api/openapi.json", "--url", server.url,
                "-H", f"Authorization: Bearer {KEY}",
                "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
                "--max-examples", "25", "--seed", "1",
            ],
            capture_output=True, text=True, timeout=240,
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        # Exit 0 means no check failed; a warning (a slow answer, say) is not a failure.
        assert " passed" in run.stdout and "FAILURES" not in run.stdout, run.stdout[-4000:]
    finally:
        server.stop()
