//! Benchmarks and the load generator for Laundry List. Empty until the performance issue
//! lands; the crate exists so the workspace has the layout the brief describes.
