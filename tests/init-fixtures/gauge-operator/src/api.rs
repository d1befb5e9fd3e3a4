use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// An example in a comment is not a type: #[derive(CustomResource)] #[kube(group = "x", version = "v1", kind = "Commented")]

/// What a gauge measures.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(group = "metrics.example.com", version = "v1beta1", kind = "Gauge", namespaced)]
#[kube(status = "GaugeStatus", shortname = "gg")]
pub struct GaugeSpec {
    pub target: String,
    pub interval_seconds: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct GaugeStatus {
    pub reading: Option<f64>,
}

/// A cluster-scoped pool of gauges.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(group = "metrics.example.com", version = "v1beta1", kind = "GaugePool")]
pub struct GaugePoolSpec {
    pub size: u32,
}
