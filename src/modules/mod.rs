//! Task modules. The registry is the one place that names them and their arguments.

pub mod registry;
pub mod scripts;
