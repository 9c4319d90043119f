//! `[tracing]`: OpenTelemetry traces sent to an OTLP/HTTP collector (off unless an endpoint is
//! set here or in the standard `OTEL_*` variables, which the app reads on top).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`; spans go to
    /// `<base>/v1/traces`). None: off, unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as the full URL) is set.
    pub otlp_endpoint: Option<String>,
    /// The share of traces started here that are kept (0 to 1); a request that comes with a
    /// `traceparent` follows its sampled flag. `OTEL_TRACES_SAMPLER_ARG` overrides it.
    pub sample_ratio: f64,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` overrides it).
    pub service_name: String,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "switchboard".into(),
        }
    }
}
