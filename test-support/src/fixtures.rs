//! Inputs many tests share: the example catalog and compressed bodies.

use std::io::Write;

/// The example catalog (`catalog/ecommerce.toml`) as the repository holds it.
pub const EXAMPLE_CATALOG: &str = include_str!("../../catalog/ecommerce.toml");

/// `bytes` compressed with gzip.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("finish")
}
