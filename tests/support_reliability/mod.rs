//! Helpers shared by the reliability tests (model, crash, corruption, stress).

pub mod model;
