//! Gauges: a controller that reports each Gauge's reading in its status.

pub mod api;
pub mod controller;
mod metrics;
