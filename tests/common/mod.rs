#![allow(dead_code)]

pub mod data;
pub mod python;
pub mod server;
