"""A real OTLP/HTTP trace receiver for the tracing e2e test: takes POST /v1/traces
(OTLP/JSON, as the OpenTelemetry collector does: ids in hex), decodes each request into
opentelemetry-proto's ExportTraceServiceRequest (an unknown field or a wrong type is refused
with 400, as a collector would), and answers GET /spans with every span received so far:
trace and span ids, parent, name, kind, the resource's service.name and the attributes.

    python otlp_receiver.py PORT
"""
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SPANS = []
LOCK = threading.Lock()


def hex_ids_to_base64(request):
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping reads bytes as base64."""
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return request


def attribute(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/json":
            self.send_response(404)
            self.end_headers()
            return
        try:
            request = json_format.Parse(json.dumps(hex_ids_to_base64(json.loads(body))), ExportTraceServiceRequest())
        except (ValueError, json_format.ParseError) as error:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(str(error).encode())
            return
        received = []
        for resource_spans in request.resource_spans:
            service = next((attribute(a.value) for a in resource_spans.resource.attributes if a.key == "service.name"), None)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append({
                        "service": service,
                        "traceId": span.trace_id.hex(),
                        "spanId": span.span_id.hex(),
                        "parentSpanId": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "status": span.status.code,
                        "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano,
                        "attributes": {a.key: attribute(a.value) for a in span.attributes},
                    })
        with LOCK:
            SPANS.extend(received)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self):
        with LOCK:
            body = json.dumps(SPANS).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
