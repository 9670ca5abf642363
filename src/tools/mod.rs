//! What surrounds the pipeline rather than being part of it: `cardinal gen`'s
//! production-like frames (for demos, tests and benchmarks), `cardinal demo`, a
//! launcher for the development broker (Tansu), and SVG charts of results
//! (`cardinal chart` and the `--http` live page).

pub mod chart;
pub mod demo;
pub mod generator;
pub mod tansu;
