//! Fault-injection suite for Laundry List. Empty until the fault-injection issue lands;
//! the crate exists so the workspace has the layout the brief describes.
