//! Providers of a cluster. Today: [`local`], real etcd and kube-apiserver processes on this
//! machine with the aggregation layer switched on.

pub mod local;
mod shared;

pub use shared::shared;
